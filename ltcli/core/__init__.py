"""What every package may use: the error types (`errors`), pytree type aliases (`pytrees`),
atomic file writes (`atomic`), lt's folders (`paths`), a progress meter (`meter`) and the
processes of a multi-host job (`hosts`).

Imports no other package of lt.
"""

"""What every package may use: the error types (`errors`), pytree type aliases (`base`),
atomic file writes (`atomic`), lt's folders (`paths`) and a progress meter (`meter`).

Imports no other package of lt.
"""

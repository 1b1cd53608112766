"""The filesystem store: runs, cells and their files (`store`), background writes (`writer`)
and removing what is no longer wanted (`housekeeping`).

May import experiment (a cell's identity, the descriptor it stores), science (mask
packing), models, data and core; never train, results or cli.
"""

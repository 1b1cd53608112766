"""The lottery-ticket math on pytrees: magnitude pruning and its rounding rule (`pruning`),
pruning-at-initialization scores (`scoring`), the error path between two networks
(`interpolation`), and the names of the methods (`methods`, no JAX). Pure functions of
arrays and models passed in.

May import core only.
"""

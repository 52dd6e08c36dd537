"""The pure domain of paycell: standard library only, no I/O, no clock, no randomness.

Time and identifiers are arguments; everything here is a function of its inputs, so the same
batch gives the same results on every storage backend and in every test.
"""

# cython: language_level=3
"""Duplicate keys in msgpack maps, found in C before a request is believed."""

cpdef object duplicate_key(bytes data)

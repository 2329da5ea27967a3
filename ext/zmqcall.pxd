# cython: language_level=3
"""Per-message ZeroMQ calls of the engine's intake, made from C on pyzmq's own libzmq."""

cpdef int send_pair(size_t handle, bytes route, object frame) except -1
cpdef object recv_message(size_t handle, bint want_user_id)
cpdef bint has_input(size_t handle) except -1

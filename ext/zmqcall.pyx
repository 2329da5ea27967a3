# cython: language_level=3, boundscheck=False, wraparound=False
"""Per-message ZeroMQ calls of the engine's intake, made from C on pyzmq's own libzmq.

pyzmq's Cython backend adds 1-3 us of Python-level work to every call on
this machine (argument checks, a ``SocketOption`` enum built per
``getsockopt``, a ``Frame`` object and a second ``getsockopt`` per received
part, an exception object per ``zmq.Again``). Intake makes several such
calls per order, so they are made here instead, straight into the libzmq
that pyzmq loaded (the same library, hence the same sockets: the handle is
``zmq.Socket.underlying``). Everything else about a socket (options, binding,
CURVE, closing) stays with pyzmq.

The functions are resolved once at import, from the library pyzmq's backend
is linked against (``pyzmq.libs/libzmq-*.so`` in pyzmq's wheels, a system
libzmq otherwise), with ``dlopen(RTLD_NOLOAD)``: nothing new is loaded.

A handle of 0 stands for a closed socket: every call then fails with
``ENOTSOCK`` instead of touching freed memory.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, \
    PyBytes_GET_SIZE
from libc.errno cimport errno, EAGAIN
from libc.stdint cimport uintptr_t
from libc.string cimport memset

import ctypes
import os
import re

import zmq
import zmq.backend.cython._zmq as _pyzmq_backend

cdef extern from "<dlfcn.h>" nogil:
    void* dlopen(const char* filename, int flags)
    void* dlsym(void* handle, const char* symbol)
    char* dlerror()
    int RTLD_NOW
    int RTLD_NOLOAD


# libzmq's ABI, as zmq.h declares it (stable since libzmq 4.0).
ctypedef struct zmq_msg_t:
    unsigned char _[64]

ctypedef int (*send_fn)(void* s, const void* buf, size_t len, int flags) noexcept nogil
ctypedef int (*msg_init_fn)(zmq_msg_t* msg) noexcept nogil
ctypedef int (*msg_recv_fn)(zmq_msg_t* msg, void* s, int flags) noexcept nogil
ctypedef void* (*msg_data_fn)(zmq_msg_t* msg) noexcept nogil
ctypedef size_t (*msg_size_fn)(const zmq_msg_t* msg) noexcept nogil
ctypedef int (*msg_more_fn)(const zmq_msg_t* msg) noexcept nogil
ctypedef int (*msg_close_fn)(zmq_msg_t* msg) noexcept nogil
ctypedef const char* (*msg_gets_fn)(const zmq_msg_t* msg, const char* prop) noexcept nogil
ctypedef int (*msg_get_fn)(const zmq_msg_t* msg, int prop) noexcept nogil
ctypedef int (*getsockopt_fn)(void* s, int option, void* optval, size_t* optvallen) noexcept nogil

cdef send_fn _send = NULL
cdef msg_init_fn _msg_init = NULL
cdef msg_recv_fn _msg_recv = NULL
cdef msg_data_fn _msg_data = NULL
cdef msg_size_fn _msg_size = NULL
cdef msg_more_fn _msg_more = NULL
cdef msg_close_fn _msg_close = NULL
cdef msg_gets_fn _msg_gets = NULL
cdef msg_get_fn _msg_get = NULL
cdef getsockopt_fn _getsockopt = NULL

cdef enum:
    ZMQ_DONTWAIT = 1
    ZMQ_SNDMORE = 2
    ZMQ_EVENTS = 15
    ZMQ_POLLIN = 1
    ZMQ_SRCFD = 2
    ENOTSOCK_ = 88


def _libzmq_path() -> str:
    """The file of the libzmq that pyzmq's backend uses (already loaded).

    A shared libzmq when pyzmq links one (its wheels, or a system library);
    otherwise pyzmq's backend module itself, which then holds libzmq.
    """
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.rstrip("\n").rpartition(" ")[2]
            if re.search(r"/libzmq[^/]*\.so", path):
                return path
    return os.path.realpath(_pyzmq_backend.__file__)


cdef void* _sym(void* lib, const char* name) except NULL:
    cdef void* fn = dlsym(lib, name)
    if fn == NULL:
        raise ImportError(f"{name.decode()} not found in {_libzmq_path()}: this pyzmq build "
                          "does not export libzmq's functions")
    return fn


cdef void _resolve() except *:
    global _send, _msg_init, _msg_recv, _msg_data, _msg_size, _msg_more, _msg_close, _msg_gets
    global _msg_get, _getsockopt
    path = _libzmq_path().encode()
    cdef void* lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD)
    if lib == NULL:
        raise ImportError(f"libzmq {path.decode()} is not loaded: {dlerror().decode()}")
    _send = <send_fn>_sym(lib, b"zmq_send")
    _msg_init = <msg_init_fn>_sym(lib, b"zmq_msg_init")
    _msg_recv = <msg_recv_fn>_sym(lib, b"zmq_msg_recv")
    _msg_data = <msg_data_fn>_sym(lib, b"zmq_msg_data")
    _msg_size = <msg_size_fn>_sym(lib, b"zmq_msg_size")
    _msg_more = <msg_more_fn>_sym(lib, b"zmq_msg_more")
    _msg_close = <msg_close_fn>_sym(lib, b"zmq_msg_close")
    _msg_gets = <msg_gets_fn>_sym(lib, b"zmq_msg_gets")
    _msg_get = <msg_get_fn>_sym(lib, b"zmq_msg_get")
    _getsockopt = <getsockopt_fn>_sym(lib, b"zmq_getsockopt")


_resolve()

#: The errno of a send that found the peer's queue full (ZeroMQ's EAGAIN).
AGAIN = EAGAIN


cdef inline int _errno() noexcept nogil:
    # libzmq reports through errno (zmq_errno() returns the same value on Linux).
    return errno


cdef object _error(int err):
    return zmq.ZMQError(err)


cpdef int send_pair(size_t handle, bytes route, object frame) except -1:
    """Send ``[route, frame]`` on a ROUTER socket without blocking.

    ``frame`` is ``bytes`` or any C-contiguous buffer (a reused ``bytearray``).
    Returns 0, or ``AGAIN`` when the peer's queue is full (nothing was sent:
    a ROUTER takes a multipart message whole or not at all). Any other
    failure raises ``zmq.ZMQError``.
    """
    if handle == 0:
        raise _error(ENOTSOCK_)
    cdef void* s = <void*>handle
    cdef int rc
    cdef const char* r = route
    cdef size_t rn = len(route)
    cdef const unsigned char[::1] view
    cdef const unsigned char* data
    cdef Py_ssize_t n
    if PyBytes_CheckExact(frame):
        # Every frame the engine sends: read in place. A typed memoryview of it (the
        # buffer's format parsed, a memoryview object made) cost about 1,100
        # instructions a send, as much as libzmq's two sends of the parts.
        data = <const unsigned char*>PyBytes_AS_STRING(frame)
        n = PyBytes_GET_SIZE(frame)
    else:
        if frame is None:  # (a typed memoryview admits None, as an empty buffer)
            raise TypeError("frame must be a buffer, not None")
        view = frame
        n = view.shape[0]
        data = &view[0] if n else NULL
    with nogil:
        rc = _send(s, r, rn, ZMQ_SNDMORE | ZMQ_DONTWAIT)
        if rc >= 0:
            rc = _send(s, data, n, ZMQ_DONTWAIT)
    if rc >= 0:
        return 0
    cdef int err = _errno()
    if err == EAGAIN:
        return AGAIN
    raise _error(err)


#: Parts of a message copied out: intake takes two (routing id, request); past
#: these, a part is counted (an empty ``bytes`` in its place) but not copied, so a
#: message of thousands of parts costs the engine nothing beyond what libzmq holds.
cdef enum:
    KEPT_PARTS = 4


cpdef object recv_message(size_t handle, bint want_user_id):
    """The next message's parts as ``bytes`` without blocking, or None when none waits.

    Parts past the first ``KEPT_PARTS`` (4) are given as ``b""``: their number
    counts, not their bytes.

    Returns ``(parts, user_id, fd)``: ``user_id`` is the ZAP ``User-Id`` of
    the last part (the CURVE key that sent it) when ``want_user_id``, else "";
    ``fd`` is the file descriptor of the connection it came over
    (``ZMQ_SRCFD``), which the socket monitor's ``EVENT_DISCONNECTED`` names
    when that connection goes: how intake learns which routing id went.
    """
    if handle == 0:
        raise _error(ENOTSOCK_)
    cdef void* s = <void*>handle
    cdef zmq_msg_t msg
    cdef int rc, more = 1, err, fd = -1
    cdef const char* uid
    parts = []
    user_id = ""
    while more:
        _msg_init(&msg)
        rc = _msg_recv(&msg, s, ZMQ_DONTWAIT)
        if rc < 0:
            err = _errno()
            _msg_close(&msg)
            if err == EAGAIN and not parts:
                return None
            raise _error(err)
        if len(parts) < KEPT_PARTS:
            parts.append(PyBytes_FromStringAndSize(<char*>_msg_data(&msg), _msg_size(&msg)))
        else:
            parts.append(b"")
        more = _msg_more(&msg)
        if not more:
            fd = _msg_get(&msg, ZMQ_SRCFD)
            if want_user_id:
                uid = _msg_gets(&msg, b"User-Id")
                if uid != NULL:
                    user_id = uid.decode()
        _msg_close(&msg)
    return parts, user_id, fd


cpdef bint has_input(size_t handle) except -1:
    """Whether a message waits on the socket (``ZMQ_EVENTS & ZMQ_POLLIN``).

    Reading ``ZMQ_EVENTS`` also re-arms the socket's edge-triggered ``ZMQ_FD``.
    """
    if handle == 0:
        raise _error(ENOTSOCK_)
    cdef int events = 0
    cdef size_t size = sizeof(int)
    if _getsockopt(<void*>handle, ZMQ_EVENTS, &events, &size) != 0:
        raise _error(_errno())
    return (events & ZMQ_POLLIN) != 0

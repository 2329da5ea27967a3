"""An order's per-order steps in C: its set-up (``init_order``, its ``__post_init__``),
stage changes (``advance``, and ``advance_path`` for several at one instant), fills
(``fill``, and ``fill_child`` for its child's share), a child's end (``end_child``) and
execution reports (``execution_report``, ``order_report`` for the one the order
keeps, and ``fill_report`` for a fill's, with the trade history's ``TradeFill``),
the order's and its children's fields read and written at their slots.

``Order`` is a msgspec struct: each field is a slot at a fixed offset, named by its
member descriptor. From Python, setting one costs 130 instructions or more (msgspec's
``__setattr__`` falls back to the generic one; up to about 550 where its lookups miss); ``Order.advance``
set two (the stage, and the path, a new tuple each time) and looked the
transition up in a dict of frozensets of enums: 2.9k instructions a call, four
calls an order. Here a transition is a table lookup by the stages' ints and
the two slots are written in place.

Reports: 
every order sends two reports or more. In Python, ``engine.orders.execution_report``
cost about 10k instructions a report (callgrind): half of it the call itself (nine
keyword-only defaults, each looked up in a dict on every call in 3.11), eleven
attribute reads on the order, six method calls into ``ext.instrument`` through
their Python wrappers, ``str`` of the order id and the report's keyword call.
Here the order's fields are read at their slots' offsets (``Order`` is a msgspec
struct: each field is a slot named by a member descriptor), the instrument's
``cpdef`` methods are called as C functions, and the report is made with one
vectorcall.

The rules are ``engine.orders``' (its ``execution_report`` and ``Order.advance``
are these functions): ``configure`` hands over the report's type, the order's
type, the ``OrdStatus`` and whether it is done for each ``Stage`` (by its int),
the stages each may move to, the error an illegal move raises and
``reject_name``. ``tests/reference/report_reference.py`` keeps the Python
versions, which the tests compare with over random orders and moves.
"""
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM, PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdint cimport int64_t, uint64_t

import time as _time

from ext.instrument cimport Instrument
from ext.slots cimport offset_of, slot_ptr, slot_set


cdef extern from "Python.h":
    object PyObject_Vectorcall(object callable, PyObject** args, size_t nargsf, object kwnames)
    ctypedef struct PyTypeObject:
        pass
    bint PyObject_TypeCheck(object o, PyTypeObject* t)
    bint PyLong_CheckExact(object o)
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1


cdef enum:
    N_POSITIONAL = 21       # ExecutionReport's own fields, in order; transact_time by keyword


# The order's fields read here, by name (their offsets: configure).
cdef tuple _FIELDS = ("order_id", "cl_ord_id", "account", "symbol", "side", "ord_type", "qty", "price",
           "cum_qty", "notional_x2", "stage", "path", "calendar", "done_roll", "created_ns",
           "children", "last_report")
cdef enum:
    F_ORDER_ID, F_CL_ORD_ID, F_ACCOUNT, F_SYMBOL, F_SIDE, F_ORD_TYPE, F_QTY, F_PRICE, \
        F_CUM_QTY, F_NOTIONAL_X2, F_STAGE, F_PATH, F_CALENDAR, F_DONE_ROLL, F_CREATED_NS, \
        F_CHILDREN, F_LAST_REPORT, N_FIELDS
    MAX_STAGES = 32

cdef Py_ssize_t _offsets[N_FIELDS]

# The child's fields a fill and a child's end write (``engine.orders.Child``), and their
# offsets (configure).
cdef tuple _CHILD_FIELDS = ("cum_qty", "acked", "done")
cdef enum:
    C_CUM_QTY, C_ACKED, C_DONE, N_CHILD_FIELDS
cdef Py_ssize_t _child_offsets[N_CHILD_FIELDS]
cdef object _child_cls = None
cdef object _report_cls = None
cdef object _order_cls = None
cdef tuple _status = ()
cdef tuple _terminal = ()
cdef object _reject_name = None
cdef object _illegal = None
cdef bint _allowed[MAX_STAGES][MAX_STAGES]    # [from][to]
cdef long _routed = -1                          # the stage that puts an order among the working
cdef object _stage_routed = None                # the Stage members a fill compares with and sets
cdef object _stage_partial = None
cdef object _stage_filled = None
cdef tuple _kwnames = ("transact_time",)
# A TradeFill's fields (keyword-only), in the order fill_report passes them.
cdef tuple _fill_kwnames = ("exec_id", "order_id", "cl_ord_id", "symbol", "side", "last_qty",
                            "last_px", "transact_time", "venue")
cdef object _fill_cls = None                    # engine.messages.TradeFill (configure)
cdef object _received = None                    # int(Stage.RECEIVED), a new order's first stage


def configure(report_cls, order_cls, tuple status, tuple terminal, reject_name, dict allowed,
              illegal, long routed, tuple stages, long partially_filled, long filled,
              long received, child_cls, trade_fill_cls=None):
    """Set the types and tables this module follows (``engine.orders`` does, once).

    ``status[stage]`` is the ``OrdStatus`` of an order at ``Stage`` ``stage`` and
    ``terminal[stage]`` whether it is done; ``reject_name(code)`` names a reason;
    ``allowed[stage]`` holds the stages an order at ``stage`` may move to, and
    ``illegal`` is the exception a move outside them raises; a move to ``routed`` puts
    the order among its table's working ones (see :func:`advance`). ``stages[i]`` is
    the ``Stage`` of int ``i``; a fill moves an order to ``partially_filled`` or ``filled``;
    a new order's path begins at ``received``. ``child_cls`` is the type of the
    order's children (:func:`fill_child`, :func:`end_child`); ``trade_fill_cls``, the
    fill the trade history keeps (:func:`fill_report`).
    """
    global _report_cls, _order_cls, _status, _terminal, _reject_name, _illegal, _routed
    global _stage_routed, _stage_partial, _stage_filled, _received, _child_cls, _fill_cls
    for i, name in enumerate(_FIELDS):
        _offsets[i] = offset_of(order_cls, name)
    for i, name in enumerate(_CHILD_FIELDS):
        _child_offsets[i] = offset_of(child_cls, name)
    _child_cls = child_cls
    _fill_cls = trade_fill_cls
    if len(status) != len(terminal) or len(status) > MAX_STAGES:
        raise ValueError(f"status and terminal must cover the same stages, at most {MAX_STAGES}")
    for a in range(MAX_STAGES):
        for b in range(MAX_STAGES):
            _allowed[a][b] = False
    for a, targets in allowed.items():
        for b in targets:
            if not (0 <= a < len(status) and 0 <= b < len(status)):
                raise ValueError(f"stage move {a} -> {b} outside the stages")
            _allowed[a][b] = True
    if len(stages) != len(status) or any(int(st) != i for i, st in enumerate(stages)) \
            or not all(0 <= s < len(stages)
                                             for s in (routed, partially_filled, filled,
                                                       received)):
        raise ValueError("stages must cover the stages, and routed and the fill stages be in them")
    _illegal = illegal
    _routed = routed
    _stage_routed, _stage_partial, _stage_filled = \
        stages[routed], stages[partially_filled], stages[filled]
    _received = received
    _report_cls, _order_cls, _status, _terminal = report_cls, order_cls, status, terminal
    _reject_name = reject_name


cdef inline object _named(object obj, Py_ssize_t offset, tuple names, int field):
    # A slot as a new reference (Cython's cast takes one); its name only for the error.
    cdef PyObject* value = slot_ptr(obj, offset)
    if value == NULL:
        raise AttributeError(names[field])
    return <object>value


cdef inline object _field(object order, int field):
    return _named(order, _offsets[field], _FIELDS, field)


cdef inline void _set(object order, int field, object value):
    slot_set(order, _offsets[field], value)


cdef inline object _child_field(object child, int field):
    return _named(child, _child_offsets[field], _CHILD_FIELDS, field)


cdef inline void _child_set(object child, int field, object value):
    slot_set(child, _child_offsets[field], value)


cdef object _child_of(object order, object child_id):
    # The order's child ``child_id`` (None when it lists none), its type checked.
    cdef object children = _field(order, F_CHILDREN)
    if type(children) is not dict:
        raise TypeError(f"order {_field(order, F_ORDER_ID)}'s children are not a dict")
    cdef object child = (<dict>children).get(child_id)
    if child is not None and not PyObject_TypeCheck(child, <PyTypeObject*>_child_cls):
        raise TypeError(f"order {_field(order, F_ORDER_ID)}'s child {child_id} is a "
                        f"{type(child).__name__}")
    return child


def advance(order, stage, now_ns):
    """Move ``order`` to ``stage`` at ``now_ns`` (``Order.advance``).

    An order not done holds its table's calendar (``engine.orders._Calendar``):
    routed, it joins the calendar's working orders; done, it leaves them, is
    booked in the calendar's day (``done_roll``, the day's list of done orders,
    which the day roll forgets without a walk of the table) and lets go of the
    calendar.

    Raises
    ------
    IllegalTransition
        If the state machine does not allow it.
    """
    if not PyObject_TypeCheck(order, <PyTypeObject*>_order_cls):
        raise TypeError(f"advance needs an order, not {type(order).__name__}")
    _advance(order, stage, now_ns)


cdef _advance(object order, object stage, object now_ns):
    cdef object current = _field(order, F_STAGE)
    cdef long a = current
    cdef long b = stage
    if not (0 <= a < MAX_STAGES and 0 <= b < MAX_STAGES and _allowed[a][b]):
        raise _illegal(f"order {_field(order, F_ORDER_ID)} ({_field(order, F_CL_ORD_ID)}): "
                       f"{current.name} -> {stage.name}")
    cdef object path = _field(order, F_PATH)
    if type(path) is not tuple:
        raise TypeError(f"order {_field(order, F_ORDER_ID)}'s path is not a tuple")
    cdef Py_ssize_t n = PyTuple_GET_SIZE(path), i
    cdef object grown = PyTuple_New(n + 2)
    cdef object item
    for i in range(n):
        item = <object>PyTuple_GET_ITEM(path, i)
        Py_INCREF(item)      # (SET_ITEM steals a reference)
        PyTuple_SET_ITEM(grown, i, item)
    item = b                 # int(stage): the path holds plain ints
    Py_INCREF(item)
    PyTuple_SET_ITEM(grown, n, item)
    Py_INCREF(now_ns)
    PyTuple_SET_ITEM(grown, n + 1, now_ns)
    _set(order, F_STAGE, stage)
    _set(order, F_PATH, grown)
    cdef object calendar = _field(order, F_CALENDAR)
    if calendar is None:
        return
    if _terminal[b]:
        _set(order, F_CALENDAR, None)
        day = calendar.today
        _set(order, F_DONE_ROLL, day.roll)
        day.done.append(order)
        calendar.working.pop(_field(order, F_ORDER_ID), None)
    elif b == _routed:
        calendar.working[_field(order, F_ORDER_ID)] = None


def advance_path(order, tuple stages, now_ns):
    """Move ``order`` to each of ``stages`` in turn, all at ``now_ns``, as that many calls
    of :func:`advance` would (the path, the calendar and the error alike).

    A new order passes three stages at the same instant when nothing refuses it
    (validated, risk-checked, routed): one call from Python, not three.

    Raises
    ------
    IllegalTransition
        At the first move the state machine does not allow (the moves before it
        stand, as with separate calls).
    """
    if not PyObject_TypeCheck(order, <PyTypeObject*>_order_cls):
        raise TypeError(f"advance_path needs an order, not {type(order).__name__}")
    for stage in stages:
        _advance(order, stage, now_ns)


def fill(order, last_qty, last_px_x2, now_ns):
    """Book a fill (price in half-ticks) and move to PARTIALLY_FILLED or FILLED (``Order.fill``).

    A venue's fill is a fact: one past what is left is booked in full (the
    order is then FILLED and ``overfilled``), and so is one of an order
    already FILLED (a venue overfilling it further; it stays FILLED). The
    sums are Python ints, as they were: a notional may pass 64 bits.

    Raises
    ------
    IllegalTransition
        If the fill is not positive, or the order is neither working nor FILLED.
    """
    if not PyObject_TypeCheck(order, <PyTypeObject*>_order_cls):
        raise TypeError(f"fill needs an order, not {type(order).__name__}")
    _fill(order, last_qty, last_px_x2, now_ns)


def fill_child(order, child_id, last_qty, last_px_x2, now_ns):
    """:func:`fill`, booked to the order's child ``child_id`` too: its ``cum_qty`` grows
    and it is ``acked`` (a venue may send a fill without an ack before it). Returns the
    child, or None when the order lists none by that id (the order's fill stands).

    The child's two fields are written here, in place: from Python each cost a
    write through msgspec's generic ``__setattr__`` (130 instructions or more), and
    the fill is a call into C anyway.

    Raises
    ------
    IllegalTransition
        As :func:`fill` (and the child is left as it was).
    """
    if _child_cls is None:
        raise RuntimeError("ext.orderstate.configure was not called")
    if not PyObject_TypeCheck(order, <PyTypeObject*>_order_cls):
        raise TypeError(f"fill_child needs an order, not {type(order).__name__}")
    cdef object child = _child_of(order, child_id)
    _fill(order, last_qty, last_px_x2, now_ns)
    if child is not None:
        _child_set(child, C_CUM_QTY, _child_field(child, C_CUM_QTY) + last_qty)
        _child_set(child, C_ACKED, True)
    return child


def end_child(order, child_id):
    """Mark the order's child ``child_id`` ``done`` (its venue works it no more); returns
    whether the order lists such a child (one in place of ``child_id in order.children``,
    a lookup and a write through msgspec's generic ``__setattr__``)."""
    if _child_cls is None:
        raise RuntimeError("ext.orderstate.configure was not called")
    if not PyObject_TypeCheck(order, <PyTypeObject*>_order_cls):
        raise TypeError(f"end_child needs an order, not {type(order).__name__}")
    cdef object child = _child_of(order, child_id)
    if child is None:
        return False
    _child_set(child, C_DONE, True)
    return True


cdef _fill(object order, object last_qty, object last_px_x2, object now_ns):
    if last_qty <= 0:
        raise _illegal(f"order {_field(order, F_ORDER_ID)}: fill of {last_qty}")
    cdef object stage = _field(order, F_STAGE)
    # (Compared by identity first: the stage slot holds the Stage members themselves.)
    if stage is not _stage_routed and stage is not _stage_partial and stage is not _stage_filled \
            and stage != _stage_routed and stage != _stage_partial and stage != _stage_filled:
        raise _illegal(f"order {_field(order, F_ORDER_ID)} ({_field(order, F_CL_ORD_ID)}): "
                       f"fill of {last_qty} when {stage.name}")
    cdef object cum = _field(order, F_CUM_QTY) + last_qty
    cdef object notional = _field(order, F_NOTIONAL_X2) + last_qty * last_px_x2
    _set(order, F_CUM_QTY, cum)
    _set(order, F_NOTIONAL_X2, notional)
    if stage is not _stage_filled and stage != _stage_filled:
        _advance(order, _stage_filled if cum >= _field(order, F_QTY) else _stage_partial, now_ns)


def init_order(order):
    """A new order's path (its first stage, RECEIVED, at ``created_ns``) and its empty dict
    of children (``Order.__post_init__``).

    msgspec calls it for every order made: as a Python method it was a frame
    entered from C and two slot writes through msgspec's generic
    ``__setattr__``; here the slots are written in place.
    """
    if _order_cls is None:
        raise RuntimeError("ext.orderstate.configure was not called")
    if not PyObject_TypeCheck(order, <PyTypeObject*>_order_cls):
        raise TypeError(f"init_order needs an order, not {type(order).__name__}")
    _set(order, F_PATH, (_received, _field(order, F_CREATED_NS)))
    _set(order, F_CHILDREN, {})


cdef object _decimal(object n):
    """``str(n)`` of an int, without the generic conversion for one in int64."""
    cdef int overflow = 0
    cdef long long x
    if not PyLong_CheckExact(n):
        return str(n)
    x = PyLong_AsLongLongAndOverflow(n, &overflow)
    if overflow or x < 0:
        return str(n)
    cdef char buf[24]
    cdef int i = 24
    cdef uint64_t u = <uint64_t>x
    while True:
        i -= 1
        buf[i] = <char>(48 + u % 10)
        u //= 10
        if u == 0:
            break
    return PyUnicode_DecodeASCII(buf + i, 24 - i, NULL)


def execution_report(order, Instrument inst not None, exec_type, *, int64_t last_qty=0,
                     int64_t last_px_x2=0, venue=None, exec_id=None, orig_cl_ord_id=None,
                     reason=0, text=None, cl_ord_id=None, price_sent=None):
    """The order's current state as an ``ExecutionReport``.

    ``qty`` is the quantity in force, so ``qty == cum_qty + leaves_qty``
    holds: once the order is done without filling in full, the quantity in
    force is what filled. ``cl_ord_id`` overrides the order's own: a refused
    cancel or replace is reported under the request's id. ``price_sent`` is
    the report's ``price`` when the order holds none: the client's own text
    of a new order refused before its price became ticks (off the tick, say),
    which the caller has checked is a decimal string. ``last_qty`` and
    ``last_px_x2`` (half-ticks) describe a fill; ``reason`` a refusal.
    """
    return _execution_report(order, inst, exec_type, last_qty, last_px_x2, venue, exec_id,
                             orig_cl_ord_id, reason, text, cl_ord_id, price_sent)


def order_report(order, Instrument inst not None, exec_type, text=None, *, int64_t last_qty=0,
                 int64_t last_px_x2=0, venue=None, exec_id=None, orig_cl_ord_id=None,
                 reason=0, cl_ord_id=None, price_sent=None):
    """:func:`execution_report`, kept as the order's ``last_report`` (what status requests
    answer with), for the report the order's session is sent.

    ``text`` may come positionally: the pipeline's NEW and CANCELED reports carry nothing
    else, and a keyword costs the call its parsing.

    The slot is written here, in place, not through msgspec's generic ``__setattr__``
    from Python: the report is built here anyway. (Its ``report_seq``, known once it
    is sent, stays a write from Python: done here, with the send called from C, the
    bound method made per report to hand over cost what the write did.)
    """
    report = _execution_report(order, inst, exec_type, last_qty, last_px_x2, venue, exec_id,
                               orig_cl_ord_id, reason, text, cl_ord_id, price_sent)
    _set(order, F_LAST_REPORT, report)
    return report


def fill_report(order, Instrument inst not None, exec_type, int64_t last_qty,
                int64_t last_px_x2, venue, exec_id):
    """The report of a venue's fill of ``order`` (:func:`order_report`, kept as its
    ``last_report``) and the ``TradeFill`` the trade history keeps of it: ``(report,
    fill)``, the fill's fields the report's (its ``transact_time`` included).

    Positional, for the pipeline's fill path: :func:`order_report`'s keywords cost the
    call their parsing (about 600 instructions for four), and the fill made from
    Python was a keyword call, eight reads of the order and the report and ``str``
    of the order id, which the report has made already.

    Raises
    ------
    ValueError
        If ``last_qty`` is not positive: a fill's report states what filled.
    """
    if _fill_cls is None:
        raise RuntimeError("ext.orderstate.configure was given no trade_fill_cls")
    if last_qty <= 0:
        raise ValueError(f"a fill's report needs lots filled, not {last_qty}")
    cdef PyObject* fill = NULL
    report = _execution_report(order, inst, exec_type, last_qty, last_px_x2, venue, exec_id,
                               None, 0, None, None, None, &fill)
    _set(order, F_LAST_REPORT, report)
    cdef object trade_fill = <object>fill
    Py_XDECREF(fill)         # (the cast took its own reference)
    return report, trade_fill


cdef object _execution_report(object order, Instrument inst, object exec_type, int64_t last_qty,
                              int64_t last_px_x2, object venue, object exec_id,
                              object orig_cl_ord_id, object reason, object text,
                              object cl_ord_id, object price_sent,
                              PyObject** trade_fill=NULL):
    # With ``trade_fill``, the fill as the report gives it is made too, from the same
    # field objects (its new reference stored there).
    if _report_cls is None:
        raise RuntimeError("ext.orderstate.configure was not called")
    if not PyObject_TypeCheck(order, <PyTypeObject*>_order_cls):
        raise TypeError(f"execution_report needs an order, not {type(order).__name__}")
    cdef object stage = _field(order, F_STAGE)
    cdef Py_ssize_t s = stage
    if not 0 <= s < len(_status):
        raise ValueError(f"order {_field(order, F_ORDER_ID)} has no stage {s}")
    cdef int64_t cum = _field(order, F_CUM_QTY)
    cdef int64_t leaves = 0 if _terminal[s] else <int64_t>_field(order, F_QTY) - cum
    cdef int64_t price = _field(order, F_PRICE)
    cdef int64_t code = reason
    # The report's fields, each held here while the array below points at them.
    cdef object f0 = _decimal(_field(order, F_ORDER_ID))
    cdef object f1 = cl_ord_id if cl_ord_id else _field(order, F_CL_ORD_ID)
    cdef object f2 = _field(order, F_ACCOUNT)
    cdef object f3 = _field(order, F_SYMBOL)
    cdef object f4 = _field(order, F_SIDE)
    cdef object f6 = _status[s]
    cdef object f7 = inst.lots_to_qty(cum + leaves)
    cdef object f8 = inst.lots_to_qty(cum)
    cdef object f9 = inst.lots_to_qty(leaves)
    cdef object f12 = _field(order, F_ORD_TYPE)
    cdef object f13 = inst.ticks_to_price(price) if price else price_sent
    cdef object f14 = inst.avg_px(_field(order, F_NOTIONAL_X2), cum)
    cdef object f15 = inst.lots_to_qty(last_qty) if last_qty else None
    cdef object f16 = inst.half_ticks_to_price(last_px_x2) if last_qty else None
    cdef object f18 = code
    cdef object f19 = _reject_name(reason) if code else None
    cdef object now = _time.time_ns()
    cdef PyObject* args[N_POSITIONAL + 1]
    args[0], args[1], args[2], args[3] = <PyObject*>f0, <PyObject*>f1, <PyObject*>f2, <PyObject*>f3
    args[4], args[5], args[6] = <PyObject*>f4, <PyObject*>exec_type, <PyObject*>f6
    args[7], args[8], args[9] = <PyObject*>f7, <PyObject*>f8, <PyObject*>f9
    args[10], args[11], args[12] = <PyObject*>orig_cl_ord_id, <PyObject*>exec_id, <PyObject*>f12
    args[13], args[14], args[15], args[16] = <PyObject*>f13, <PyObject*>f14, <PyObject*>f15, <PyObject*>f16
    args[17], args[18], args[19], args[20] = <PyObject*>venue, <PyObject*>f18, <PyObject*>f19, <PyObject*>text
    args[21] = <PyObject*>now
    report = PyObject_Vectorcall(_report_cls, args, N_POSITIONAL, _kwnames)
    cdef PyObject* fill_args[9]
    cdef object fill
    if trade_fill != NULL:
        fill_args[0], fill_args[1], fill_args[2] = <PyObject*>exec_id, <PyObject*>f0, <PyObject*>f1
        fill_args[3], fill_args[4], fill_args[5] = <PyObject*>f3, <PyObject*>f4, <PyObject*>f15
        fill_args[6], fill_args[7], fill_args[8] = <PyObject*>f16, <PyObject*>now, <PyObject*>venue
        fill = PyObject_Vectorcall(_fill_cls, fill_args, 0, _fill_kwnames)
        Py_INCREF(fill)
        trade_fill[0] = <PyObject*>fill
    return report

"""Recovery replays the journal's JournalChildren records into each order's children."""
import msgspec

from engine.messages import JournalChildren, JournalMeta
from engine.orders import OrderTable
from engine.recovery import _apply_children


def replay(table, *records):
    """Each record through the journal's encoding, then into ``table``; the live children."""
    children: dict = {}
    decoder = msgspec.msgpack.Decoder(JournalMeta)
    for record in records:
        _apply_children(table, children, decoder.decode(msgspec.msgpack.encode(record)))
    return children


def test_new_fills_reprices_and_done_children_in_journal_order():
    table = OrderTable()
    order = table.create("a-1", "s1", "ACC1", "AAA", 1, 2, 0, 5000, 100, 0)
    other = table.create("a-2", "s1", "ACC1", "AAA", 2, 2, 0, 5100, 10, 0)
    live = replay(
        table,
        JournalChildren(new=[(7, order.order_id, "NEXA", 5000, 60),
                             (8, order.order_id, "MIDX", 0, 40),
                             (9, other.order_id, "BRIX", 5100, 10)],
                        fills=[(7, 20)]),
        JournalChildren(fills=[(7, 15), (9, 10)], repriced=[(7, 5001, 60)], done=[9]),
        JournalChildren(fills=[(8, 40)], done=[8]),
    )
    assert [(c.child_id, c.venue, c.price, c.qty, c.cum_qty, c.done)
            for c in order.children.values()] == \
        [(7, "NEXA", 5001, 60, 35, False), (8, "MIDX", 0, 40, 40, True)]
    assert [(c.child_id, c.cum_qty, c.done) for c in other.children.values()] == [(9, 10, True)]
    assert list(live) == [7]  # the children not yet done


def test_a_child_of_an_order_the_journal_does_not_hold_is_skipped():
    table = OrderTable()
    order = table.create("a-1", "s1", "ACC1", "AAA", 1, 2, 0, 5000, 100, 0)
    live = replay(table, JournalChildren(new=[(1, order.order_id + 99, "NEXA", 5000, 1)],
                                         fills=[(1, 1)], done=[1]))
    assert live == {} and order.children == {}


def test_a_child_is_acked_by_its_venues_ack_or_a_fill_and_not_otherwise():
    # A child the venue refused (done, never acked) stays unacked; a fill
    # tells a venue had it, as it does live.
    table = OrderTable()
    order = table.create("a-1", "s1", "ACC1", "AAA", 1, 2, 0, 5000, 100, 0)
    replay(table,
           JournalChildren(new=[(1, order.order_id, "NEXA", 5000, 10),
                                (2, order.order_id, "BRIX", 5000, 10),
                                (3, order.order_id, "LITA", 5000, 10)], acked=[1]),
           JournalChildren(fills=[(2, 5)], done=[3]))
    assert [(c.child_id, c.acked, c.done) for c in order.children.values()] == \
        [(1, True, False), (2, True, False), (3, False, True)]

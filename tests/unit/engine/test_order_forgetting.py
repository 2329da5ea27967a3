"""The order table forgets what was done ``keep_done_days`` day rolls ago (``OrderTable.roll``).

Before, the table kept every order since the journal began: ``[orders] max_orders``
counted them all, so an engine refused every new order once it had taken that many in
its life, and its memory only grew.
"""
from engine.messages import NewOrder
from engine.orders import Order, OrderTable, Stage
from engine.recovery import _awaiting_first_report


def order(table, cl_ord_id, account="ACC1"):
    return table.create(cl_ord_id, "s1", account, "AAA", 1, 2, 1, 5000, 100, 0)


def finish(o, stage=Stage.CANCELED):
    for step in (Stage.VALIDATED, Stage.RISK_CHECKED, Stage.ROUTED, stage):
        o.advance(step, 0)


def test_a_done_order_is_kept_the_next_day_and_forgotten_at_the_roll_after():
    table = OrderTable()
    done, working = order(table, "d"), order(table, "w")
    finish(done)
    for step in (Stage.VALIDATED, Stage.RISK_CHECKED, Stage.ROUTED):
        working.advance(step, 0)
    assert table.roll(1) == []                    # its day ended: still known all the next
    assert table.find("ACC1", "d") is done and done.done_roll == 1
    assert table.roll(1) == [done]                # the next one ended too: forgotten
    assert table.find("ACC1", "d") is None and not table.used("ACC1", "d")
    assert done.order_id not in table.by_id and len(table) == 1
    for _ in range(5):
        assert table.roll(1) == []                # a working order is never forgotten
    assert table.find("ACC1", "w") is working


def test_keep_done_days_counts_whole_days_after_the_one_the_order_was_done_in():
    table = OrderTable()
    first = order(table, "a")
    first.reject(10, "refused", 0)
    table.roll(2)
    later = order(table, "b")
    finish(later, Stage.FILLED)
    assert table.roll(2) == []
    assert table.roll(2) == [first]
    assert table.roll(2) == [later]
    assert table.rolls == 4


def test_an_accepted_order_forgotten_leaves_its_account_marked():
    # The journal still holds it: a restart replays it under its account, so the account
    # cannot leave the configuration (Pipeline's limits reload checks this set).
    table = OrderTable()
    filled, refused = order(table, "f", "ACC1"), order(table, "r", "ACC2")
    finish(filled, Stage.FILLED)
    refused.reject(10, "no", 0)
    table.roll(1), table.roll(1)
    assert table.accounts_forgotten == {"ACC1"}


def test_every_id_a_replaced_order_had_leaves_with_it_and_not_before():
    table = OrderTable()
    replaced = order(table, "r.0")
    for k in range(1, 4):                         # replaced three times, on day 0 and day 1
        assert table.reserve("ACC1", f"r.{k}")
        table.alias(replaced, f"r.{k}")
        if k == 1:
            table.roll(1)
    finish(replaced)
    table.roll(1)                                 # done in day 1: its ids stay with it
    assert all(table.find("ACC1", f"r.{k}") is replaced for k in range(4))
    assert table.roll(1) == [replaced]
    assert not any(table.used("ACC1", f"r.{k}") for k in range(4))
    assert table.ids_held() == 0


def test_an_id_a_request_spent_is_forgotten_like_a_done_order():
    table = OrderTable()
    assert table.reserve("ACC1", "x")             # a Cancel's id that named no order
    table.roll(1)
    assert table.used("ACC1", "x") and not table.reserve("ACC1", "x")
    table.roll(1)
    assert not table.used("ACC1", "x")
    assert table.reserve("ACC1", "x")             # free again, spent again


def test_an_id_spent_on_an_earlier_day_goes_with_that_day():
    # Recovery spends a request's id when it is answered: one that arrived before a
    # roll and was answered after it is forgotten with the day it arrived in.
    table = OrderTable()
    table.roll(1)
    assert table.reserve("ACC1", "late", spent_in=0)
    assert table.reserve("ACC1", "today")
    table.roll(1)
    assert not table.used("ACC1", "late") and table.used("ACC1", "today")
    # One whose day is forgotten already is not spent at all (it was, then forgotten).
    assert table.reserve("ACC1", "older", spent_in=0)
    assert not table.used("ACC1", "older")


def test_a_forgotten_id_names_a_new_order_and_order_ids_are_never_reused():
    table = OrderTable()
    first = order(table, "same")
    finish(first, Stage.FILLED)
    top = table.next_order_id
    table.roll(1), table.roll(1)
    second = order(table, "same")
    assert second.order_id == top and table.find("ACC1", "same") is second


def test_a_roll_journaled_before_orders_were_forgotten_forgets_nothing():
    table = OrderTable()
    done = order(table, "d")
    finish(done)
    table.reserve("ACC1", "x")
    assert table.roll(None) == [] and table.roll(None) == []
    assert table.find("ACC1", "d") is done and table.used("ACC1", "x")
    # The rolls still count: a later one forgets what they would have.
    assert table.roll(1) == [done] and not table.used("ACC1", "x")


def test_recovery_keeps_only_the_last_new_order_commands_orders_for_their_first_report():
    # Each new-order command's orders are answered in its handling, before the next
    # command: whatever an earlier command left (a refused duplicate's order, whose
    # Reject is its only answer, or one whose report a torn write lost) goes at the next
    # one, whatever the replay thinks is spent. Left, the id's next order (sent again,
    # or once forgotten) would be recreated with its terms.
    def new(qty, cl_ord_id="x", account="ACC1"):
        return NewOrder(cl_ord_id=cl_ord_id, account=account, symbol="AAA", side=1, qty=qty,
                        price="48.00")
    new_orders = {}
    refused = new("77")
    _awaiting_first_report(new_orders, [refused])
    assert new_orders == {("ACC1", "x"): refused}
    later = new("5", "y")
    _awaiting_first_report(new_orders, [later])
    assert new_orders == {("ACC1", "y"): later}
    # A bulk naming an id twice: the first order under it is the one the id names.
    first, twin, other = new("6"), new("7"), new("8", account="ACC2")
    _awaiting_first_report(new_orders, [first, twin, other])
    assert new_orders == {("ACC1", "x"): first, ("ACC2", "x"): other}
    assert new_orders[("ACC1", "x")] is first


def busy_day(table, n=300, prefix=""):
    """``n`` orders on two accounts: a third canceled by a request (an id spent that then
    names the order), a third refused, a third still working; and ids spent for nothing."""
    working = []
    for i in range(n):
        o = order(table, f"{prefix}o{i}", f"ACC{i % 2}")
        if i % 3 == 0:
            assert table.reserve(o.account, f"{prefix}c{i}")
            table.alias(o, f"{prefix}c{i}")
            finish(o)
        elif i % 3 == 1:
            o.reject(10, "no", 0)
        else:
            for step in (Stage.VALIDATED, Stage.RISK_CHECKED, Stage.ROUTED):
                o.advance(step, 0)
            working.append(o)
        if i % 10 == 0:
            assert table.reserve(o.account, f"{prefix}spent{i}")
    return working


def view(table):
    """Everything the table's lookups answer, and what it physically holds."""
    return ({o.order_id: (o.cl_ord_id, o.done_roll, int(o.stage)) for o in table.by_id.values()},
            {a: {c: (o.order_id if isinstance(o, Order) else ("spent", o.roll))
                 for c, o in ids.items()} for a, ids in table._by_account.items()},
            len(table), table.rolls, sorted(table.accounts_forgotten))


def test_a_roll_forgets_at_once_and_takes_out_in_bounded_steps_to_the_one_shot_state():
    """Taking a million forgotten orders out at the roll held the event loop about a
    second: begin_roll forgets in constant time, forget_some takes out a bounded number
    of entries per call, and the table ends as the one-shot roll leaves it."""
    stepped, one_shot = OrderTable(), OrderTable()
    for table in (stepped, one_shot):
        working = busy_day(table)
        table.roll(1)
        for o in working[::2]:
            o.advance(Stage.FILLED, 0)                   # done on the day after
        busy_day(table, 30, "next")
    one_shot.roll(1)
    held_before = len(stepped.by_id) + stepped.ids_held()
    forgotten = stepped.begin_roll(1)
    assert forgotten == 200 and len(stepped) == len(one_shot)
    # Gone for every lookup before anything left the dicts.
    assert stepped.find("ACC0", "o0") is None and not stepped.used("ACC0", "o0")
    assert not stepped.used("ACC0", "c0") and not stepped.used("ACC0", "spent0")
    assert stepped.find("ACC0", "o2") is not None          # working: kept
    assert len(stepped.by_id) + stepped.ids_held() == held_before
    steps = 0
    while True:
        before = len(stepped.by_id) + stepped.ids_held()
        more = stepped.forget_some(25)
        # (A step of 25 looks at 25 orders or listed ids: an order leaves by_id and its id.)
        assert before - (len(stepped.by_id) + stepped.ids_held()) <= 2 * 25
        steps += 1
        if not more:
            break
    assert steps > 10 and not stepped.leaving
    assert view(stepped) == view(one_shot)


def test_an_order_done_after_the_roll_before_its_entries_left_is_kept_its_full_time():
    """The marking was a walk at the roll: an incremental walk would have taken an order
    done after the roll for one done before it, and forgotten it a day early."""
    table = OrderTable()
    busy_day(table)
    late = order(table, "late")
    for step in (Stage.VALIDATED, Stage.RISK_CHECKED, Stage.ROUTED):
        late.advance(step, 0)
    table.roll(1)
    assert table.begin_roll(1) > 0 and table.leaving
    late.advance(Stage.CANCELED, 0)                      # done in day 3, mid-sweep
    assert late.done_roll == 3
    while table.forget_some(7):
        pass
    table.roll(1)
    assert table.find("ACC1", "late") is late            # kept all of day 4
    table.roll(1)
    assert table.find("ACC1", "late") is None


def test_a_roll_while_entries_are_leaving_takes_them_out_first():
    table = OrderTable()
    busy_day(table)
    table.roll(1)
    table.begin_roll(1)
    assert table.leaving
    table.begin_roll(1)
    assert all(table._gone(o) is False for o in table.by_id.values())
    assert len(table) == len(table.by_id)


def test_the_working_orders_are_known_without_a_walk_of_the_table():
    """The day roll's expiry of DAY orders walked the whole table for its working orders
    (half a second a million orders): the table keeps their ids as they are routed and
    done, and gives them oldest first, as the walk did."""
    table = OrderTable()
    working = busy_day(table)
    table.roll(1)
    later = busy_day(table, 30, "next")
    working[1].advance(Stage.PARTIALLY_FILLED, 0)
    working[2].advance(Stage.EXPIRED, 0)
    walk = [o for o in table.by_id.values() if o.stage in (Stage.ROUTED, Stage.PARTIALLY_FILLED)]
    assert table.working() == walk and len(walk) == len(working) + len(later) - 1


def test_an_ended_day_is_found_by_its_place_whatever_the_days_held():
    # One day per roll, oldest first: a removal step finds the day of an id it puts back
    # without a scan of the days held (keep_done_days may keep thousands).
    table = OrderTable()
    for _ in range(40):
        table.begin_roll(30)
        table.forget_some()
    held = [day.roll for day in table._days]
    assert held == list(range(11, 41))  # (rolls 1..10 forgotten)
    for roll in held:
        assert table._ended_day(roll).roll == roll and table._day(roll).roll == roll
    for roll in (-1, 0, 10, 41, 42):
        assert table._ended_day(roll) is None
        assert table._day(roll) is table._calendar.today
    # A request spent on a held day is booked there; on a forgotten one, taken as forgotten.
    assert table.reserve("A", "x", spent_in=20) and "x" in table._ended_day(21).spent["A"]
    assert table.reserve("A", "y", spent_in=5) and not table.used("A", "y")

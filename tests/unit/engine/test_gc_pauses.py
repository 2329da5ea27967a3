"""The service keeps full collections short: survivors of each full collection are frozen."""
import gc

from engine.service import _freeze_after_full_collection, bound_gc_pauses


def test_survivors_of_a_full_collection_are_frozen():
    try:
        bound_gc_pauses()
        assert _freeze_after_full_collection in gc.callbacks
        frozen = gc.get_freeze_count()
        kept = [[i] for i in range(5_000)]  # tracked objects made after start-up
        gc.collect(1)
        assert gc.get_freeze_count() == frozen  # young collections freeze nothing
        gc.collect(2)
        # The next full collection will not traverse them again.
        assert gc.get_freeze_count() >= frozen + len(kept)
        bound_gc_pauses()
        assert gc.callbacks.count(_freeze_after_full_collection) == 1
    finally:
        while _freeze_after_full_collection in gc.callbacks:
            gc.callbacks.remove(_freeze_after_full_collection)
        gc.unfreeze()

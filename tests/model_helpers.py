"""Helpers shared by the model tests."""


def small_input_size(model) -> int:
    """The smallest input side a model takes, but at least 32 so every stage sees real pixels."""
    return max(model.min_input_size, 32)

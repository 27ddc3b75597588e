"""Event triggers of our own (``BaseEventTrigger`` subclasses that asset watchers run in the triggerer)."""

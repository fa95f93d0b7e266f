"""EventSink: the event stream into the analytics store (body.py), its Ray shell (actor.py), its client."""

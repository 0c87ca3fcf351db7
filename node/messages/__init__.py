"""The messages actors exchange: one module per actor, holding the requests it answers and
the events it publishes. Actors import messages from here, never from each other."""

"""Operator tooling: the `mesh` CLI, the local stack launcher, embedded servers, the demo. The library
(events, bus, runtime, ml) never imports from here."""

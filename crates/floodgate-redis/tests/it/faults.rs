//! Fault tests: Redis killed under load, restarted on the same port; a cluster master killed under load.

"""The blind rating study: prompt sets, answers in batch, blind assignment, rating sessions, results,
statistics, exports and charts, the «Comparar» arena and chat feedback (see docs/ARCHITECTURE.md)."""

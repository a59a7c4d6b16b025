"""Online experiments: assignment, storage, statistics and reports (issue 16)."""

"""Helpers of the test suite: tiny flows (:mod:`helpers.flows`) and tiny runs (:mod:`helpers.runs`)."""

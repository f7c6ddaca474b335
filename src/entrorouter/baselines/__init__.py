"""Routers compared in the benchmark: one class each, in a registry (see ``base``)."""

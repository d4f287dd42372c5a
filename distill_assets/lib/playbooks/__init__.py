"""Playbooks: what a playbook is (steps, divergences, rendering), the extraction, and the playbook
index (``distill search``)."""

"""Governance's web pages: the approvals inbox (templates under templates/governance/)."""

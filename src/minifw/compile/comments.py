"""The comments of minifw's nft rules: how a rule's nft rules, and its helpers, are found
again in the live table. Pure."""

from __future__ import annotations

COMMENT_MAX = 127
HELPER = "log "


def rule_id_of_comment(comment: str | None) -> str | None:
    if not comment:
        return None
    return comment.split(": ", 1)[0]


def helper_comment(owner: str) -> str:
    """The comment of a helper log rule in front of ``owner`` (a rule id, ``run N``,
    ``policy <hook>``, ``ban <set>``): never a rule id, since ids hold no space."""
    return f"{HELPER}{owner}"[:COMMENT_MAX]


def helper_owner(comment: str | None) -> str | None:
    """The owner a helper rule's comment names; None for any other comment."""
    if comment and comment.startswith(HELPER):
        return comment[len(HELPER):]
    return None

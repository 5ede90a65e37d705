"""How a construct is named where people read it: descriptions, alarms and dashboards."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from aws_cdk import Stack
from constructs import IConstruct

from opskit.references import cached_by_reference


@cached_by_reference
def _stack_place(stack: Stack) -> tuple[str, str]:
    """The stack's name and path."""
    return stack.stack_name, stack.node.path


@cached_by_reference
def _place(construct: IConstruct) -> tuple[str, str]:
    """(stack name, path inside the stack), worked out once per construct: a construct never
    moves, and each look-up is a few round trips to the jsii runtime."""
    stack_name, stack_path = _stack_place(Stack.of(construct))
    return stack_name, construct.node.path[len(stack_path) :].lstrip("/")


def path_in_stack(construct: IConstruct) -> str:
    """`DeploymentNotifier/Notifier`: the same whether a pipeline stage holds the stack or
    the app does."""
    return _place(construct)[1]


def stage_path(construct: IConstruct) -> str:
    """`OpsKit-prod/DeploymentNotifier/Notifier`: the stack's id, then the path inside it.
    Unique in a stage, and the same whether a stage holds the stack or the app does: what
    ids and names opskit derives for other stacks are made of, so that they stay put."""
    stack_path = _stack_place(Stack.of(construct))[1]
    inside = path_in_stack(construct)
    stack_id = stack_path.rsplit("/", 1)[-1]
    return f"{stack_id}/{inside}" if inside else stack_id


def id_of(path: str) -> str:
    """A construct id made of a path's letters and digits: `MonMonitoring`."""
    return re.sub(r"[^A-Za-z0-9]", "", path)


def display_path(construct: IConstruct) -> str:
    """`opskit-prod/DeploymentNotifier/Notifier`: the stack's name, then the construct's path
    inside it. The same whether a pipeline stage holds the stack or the app does, so
    templates deployed by hand and by the pipeline agree."""
    stack_name, inside = _place(construct)
    return f"{stack_name}/{inside}" if inside else stack_name


@dataclass(frozen=True)
class TextField:
    """An AWS text field: at most `limit` characters, each matching `allowed` (a regex
    character class) where the field restricts them."""

    limit: int
    allowed: str | None = None


SECURITY_GROUP_DESCRIPTION = TextField(255, r"[a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]")
"""EC2 CreateSecurityGroup's Description. CloudFormation refuses others at deploy (CDK only
warns), and the description is create-only: a change replaces the group."""
IAM_DESCRIPTION = TextField(1000, "[\t\n\r\x20-\x7e\xa1-\xff]")
"""IAM CreateRole's Description."""
LAMBDA_DESCRIPTION = TextField(256)
"""Lambda CreateFunction's Description; CDK refuses a longer one at synth, naming no construct."""
ALARM_DESCRIPTION = TextField(1024)
"""CloudWatch PutMetricAlarm's AlarmDescription."""
SCHEDULE_DESCRIPTION = TextField(512)
"""EventBridge Scheduler CreateSchedule's Description."""

_STAND_IN = "_"
"""For a character a field refuses: every restricted field takes it."""
_CUT = "..."


def aws_text(text: str, field: TextField) -> str:
    """`text` as `field` takes it, for text built from construct ids, which may hold any
    character. A refused character becomes its plain form where that is allowed (`é` is
    `e`), else `_`; text too long is cut to end in `...`. Length counts UTF-16 units, as
    CDK's own checks do. Text the field takes comes back unchanged."""
    if field.allowed is not None:
        allowed = re.compile(field.allowed)
        text = "".join(c if allowed.fullmatch(c) else _plain(c, allowed) for c in text)
    if _units(text) <= field.limit:
        return text
    room = field.limit - len(_CUT)
    kept = []
    for character in text:
        room -= _units(character)
        if room < 0:
            break
        kept.append(character)
    return "".join(kept) + _CUT


def _plain(character: str, allowed: re.Pattern[str]) -> str:
    """`character` without its accents or compatibility form, if `allowed` takes that."""
    plain = "".join(
        c for c in unicodedata.normalize("NFKD", character) if not unicodedata.combining(c)
    )
    if plain and all(allowed.fullmatch(c) for c in plain):
        return plain
    return _STAND_IN


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2

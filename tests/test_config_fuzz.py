"""Any one mistake in cdk.json's environments or pipeline entry is a ConfigError in one
line, or a configuration that loads: never a KeyError, TypeError or other traceback.

Every path of the committed map (walked as tests/functions/event_fuzz.py walks events) is
deleted, and given a value of another JSON type, rotating through them path by path; each
variant is loaded for every environment, with the pipeline, as `app.py` loads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from stacks.config import ConfigError, load_environment
from stacks.pipeline_config import load_pipeline
from tests.functions.event_fuzz import DELETE, REPLACEMENTS, mutate, paths, same_type, value_at
from tests.synth import CDK_CONTEXT, ROOT

SETTINGS = {
    "environments": CDK_CONTEXT["environments"],
    "pipeline": json.loads((ROOT / "cdk.json").read_text())["pipeline"],
}


def variants() -> Iterator[tuple[str, Any]]:
    """Each path deleted, given a container and given a scalar of another type, the
    replacements rotating from path to path."""
    for index, path in enumerate(paths(SETTINGS, {})):
        original = value_at(SETTINGS, path)
        others = [r for r in (None, *REPLACEMENTS) if not same_type(r, original)]
        containers = [r for r in others if isinstance(r, list | dict)]
        scalars = [r for r in others if not isinstance(r, list | dict)]
        where = ".".join(str(key) for key in path)
        yield f"{where}: delete", mutate(SETTINGS, path, DELETE)
        for choices in (containers, scalars):
            mutation = choices[index % len(choices)]
            yield f"{where}: {mutation!r}", mutate(SETTINGS, path, mutation)


def load(settings: dict[str, Any]) -> None:
    """As app.py loads it: the pipeline entry loads every environment too."""
    environments = settings.get("environments")
    if "pipeline" in settings:
        load_pipeline(settings["pipeline"], environments)
    else:
        for name in sorted(CDK_CONTEXT["environments"]):
            load_environment(environments, name)


def test_every_path_of_the_committed_config_is_walked():
    walked = {name.split(": ", 1)[0] for name, _ in variants()}
    assert {"environments.prod.userService.sesSender", "pipeline.notifierEnvironment"} <= walked
    assert len(walked) >= 90


def test_a_mistake_is_one_config_error_line_or_a_config_that_loads():
    failures = []
    for name, settings in variants():
        try:
            load(settings)
        except ConfigError as error:
            if "\n" in str(error):
                failures.append(f"{name}: more than one line: {error}")
        except Exception as error:
            failures.append(f"{name}: {type(error).__name__}: {error}")
    assert failures == []

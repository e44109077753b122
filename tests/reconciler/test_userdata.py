"""The user's inference ConfigMap is read with hard bounds (issue L, item 1).

Before issue L the reconciler ran `yaml.safe_load` on whatever the ConfigMap held: an alias
bomb expanded when the pass dumped and hashed it, and deep or huge documents were parsed
in full inside the pass that serves every Workspace. Each case below is refused with a
message naming the rule, as an ObjectsError the pass turns into the Workspace's status.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.objects import ObjectsError, user_section
from reconciler.userdata import MAX_BYTES, MAX_DEPTH, UserDataError, load_user_yaml

KEY = "inference_config.yaml"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8))


class _Resolved:
    runtime = "vllm"


@pytest.mark.parametrize(("text", "words"), [
    pytest.param(BOMB, "anchors are not allowed", id="billion-laughs"),
    pytest.param("vllm: *x\n", "aliases are not allowed", id="alias"),
    pytest.param("vllm:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 60)) + "    x",
                 f"deeper than {MAX_DEPTH}", id="deep-mapping"),
    pytest.param("vllm: " + "[" * 5000 + "]" * 5000, f"deeper than {MAX_DEPTH}",
                 id="deep-flow"),
    pytest.param("vllm: {a: '" + "x" * MAX_BYTES + "'}", f"at most {MAX_BYTES}", id="huge"),
    pytest.param("vllm: !!python/object/apply:os.system [id]", "not valid YAML", id="python-tag"),
])
def test_hostile_config_text_is_refused_with_the_rule(text: str, words: str) -> None:
    with pytest.raises(ObjectsError, match=words):
        user_section(_Resolved(), {KEY: text})  # type: ignore[arg-type]


def test_an_ordinary_config_still_reads() -> None:
    text = "vllm:\n  max-model-len: 2048\n  enforce-eager: true\n"
    assert dict(user_section(_Resolved(), {KEY: text})) == {  # type: ignore[arg-type]
        "max-model-len": 2048, "enforce-eager": True}


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=st.text(max_size=400) | st.from_regex(r"[\[\]{}&*!:\-\s a-z0-9'\"]{0,300}"))
def test_any_text_loads_or_is_a_user_data_error(text: str) -> None:
    """Whatever the text, the loader answers a value or a UserDataError, nothing else."""
    with contextlib.suppress(UserDataError):
        load_user_yaml(text, what="cfg")

"""One set of generation rules for ``mlxk run`` and ``mlxk serve``.

Both build a SamplingParams, use engine/sampling's sampler and logits processors, the one
StopMatcher (engine/stops.py) and the loader's EOS set: the same greedy prompt gives the
same text through ``run --json`` and through the server (real HTTP, official openai client).
"""

from __future__ import annotations

import pytest

from mlxk.engine.stops import StopMatcher
from tests.conftest import run_json

openai = pytest.importorskip("openai")

KEY = "sk-test"  # the ``served`` fixture's key
PATTERN = "Count: one, two, one, two, one, two, one, two. Continue the pattern."


# --- the stop matcher (pure logic) ------------------------------------------------------


def feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[list[str], bool]:
    shown: list[str] = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        shown.append(text)
        if stopped:
            return shown, True
    shown.append(matcher.flush())
    return shown, False


def test_find_gives_the_earliest_stop():
    m = StopMatcher(["world", "lo w"])
    assert m.find("hello world") == 3
    assert m.find("nothing here") == -1
    assert StopMatcher(["b", "abc"]).find("xabc") == 1  # earliest start wins, not the first listed


def test_safe_length_holds_back_only_a_tail_that_may_begin_a_stop():
    m = StopMatcher(["STOP"])
    assert m.safe_length("abc ST") == 4  # "ST" may become "STOP"
    assert m.safe_length("abc S") == 4
    assert m.safe_length("abc T") == 5  # "T" begins no stop string
    assert m.safe_length("abc STX") == 7
    assert m.safe_length("") == 0
    assert StopMatcher(["ab", "xyzab"]).safe_length("..xyz") == 2


def test_stop_split_across_pieces_is_cut_and_never_shown():
    m = StopMatcher(["</answer>"])
    shown, stopped = feed_all(m, ["The answer is 4", ".</ans", "wer> and more"])
    assert stopped
    assert "".join(shown) == "The answer is 4."
    assert all("<" not in s for s in shown)  # the stop's first half was held back, not shown
    assert shown[1] == "."


def test_a_false_start_is_released_when_it_stops_matching():
    m = StopMatcher(["\nUser:"])
    assert m.feed("Hi\nUs") == ("Hi", False)
    assert m.feed("ually") == ("\nUsually", False)
    assert m.flush() == ""


def test_without_stops_text_passes_at_once_and_the_end_flushes_the_tail():
    shown, stopped = feed_all(StopMatcher([]), ["a", "b"])
    assert (shown, stopped) == (["a", "b", ""], False)
    m = StopMatcher(["", "xyz"])  # an empty stop string would match everywhere: ignored
    assert m.stops == ("xyz",)
    assert m.feed("abc x") == ("abc ", False)
    assert m.flush() == "x"


def test_overlapping_stops_cut_at_the_earliest():
    m = StopMatcher(["bc", "abcd"])
    shown, stopped = feed_all(m, ["xa", "bcd"])
    assert stopped and "".join(shown) == "x"  # "abcd" begins before "bc": its "a" was held back
    shown, stopped = feed_all(StopMatcher(["bc", "abcd"]), ["xa", "bc!"])
    assert stopped and "".join(shown) == "xa"


# --- run and serve give the same text ------------------------------------------------------


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.base + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model_id(client):
    return client.models.list().data[0].id


def served_text(client, model_id, prompt: str, system: str | None = None, **kw):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    r = client.chat.completions.create(model=model_id, messages=messages, temperature=0, **kw)
    return r.choices[0].message.content, r.choices[0].finish_reason


def run_text(prompt: str, *flags: str) -> tuple[str, str]:
    payload, rc = run_json("run", "SmolLM2", prompt, "--temperature", "0", *flags)
    assert rc == 0, payload
    return payload["data"]["response"], payload["data"]["finish_reason"]


@pytest.mark.parametrize("prompt,system,tokens", [
    ("What is the capital of France?", None, 24),  # ends at the end-of-turn token
    ("Name three fruits.", "You are terse.", 20),
    (PATTERN, None, 30),  # ends at max_tokens
])
def test_greedy_run_and_serve_give_the_same_text(demo_model_in_cache, client, model_id, prompt, system, tokens):
    flags = ["--max-tokens", str(tokens)] + (["--system", system] if system else [])
    ran = run_text(prompt, *flags)
    served = served_text(client, model_id, prompt, system, max_tokens=tokens)
    assert ran[0] and ran == served


def test_a_stop_string_cuts_run_and_serve_at_the_same_place(demo_model_in_cache, client, model_id):
    full, _ = run_text("What is the capital of France?", "--max-tokens", "24")
    assert "Paris" in full
    ran = run_text("What is the capital of France?", "--max-tokens", "24", "--stop", "Paris")
    served = served_text(client, model_id, "What is the capital of France?", max_tokens=24, stop=["Paris"])
    assert ran == served == (full[: full.index("Paris")], "stop")


def test_serve_streams_text_that_cannot_begin_a_stop_string_at_once(client, model_id):
    """Only a tail that may begin a stop string is held back, however long the stop string."""
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    chunks = list(client.chat.completions.create(model=model_id, messages=messages, temperature=0, max_tokens=24,
                                                 stream=True, stop=["Z" * 300]))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    full, _ = served_text(client, model_id, "What is the capital of France?", max_tokens=24)
    assert "".join(pieces) == full
    assert len(pieces) >= 5  # token by token, not all at the end


# --- repetition_penalty in both -------------------------------------------------------------


def test_repetition_penalty_changes_what_run_answers(demo_model_in_cache):
    plain, _ = run_text(PATTERN, "--max-tokens", "30")
    penalized, _ = run_text(PATTERN, "--max-tokens", "30", "--repetition-penalty", "1.5")
    assert plain.lower().count("one, two") >= 5  # the model repeats the pattern...
    assert penalized != plain
    assert penalized.lower().count("one, two") < plain.lower().count("one, two")  # ...less when penalized


def test_repetition_penalty_changes_what_serve_answers(client, model_id):
    plain, _ = served_text(client, model_id, PATTERN, max_tokens=30)
    penalized, _ = served_text(client, model_id, PATTERN, max_tokens=30, extra_body={"repetition_penalty": 1.5})
    assert plain.lower().count("one, two") >= 5
    assert penalized != plain
    assert penalized.lower().count("one, two") < plain.lower().count("one, two")


@pytest.mark.parametrize("flag,value", [
    ("--repetition-penalty", "0"),
    ("--top-p", "1.5"),
    ("--min-p", "-0.1"),
    ("--temperature", "nan"),
    ("--top-k", "-1"),
    ("--seed", "-1"),
])
def test_run_refuses_sampling_values_serve_refuses(flag, value):
    """The ranges are SamplingParams': checked before the model is even looked up."""
    payload, rc = run_json("run", "no-such-model", "hi", flag, value)
    assert rc == 1
    assert payload["error"]["type"] == "ValidationError"
    assert payload["error"]["message"].startswith(flag + ":")


def test_run_bounds_top_k_by_the_vocabulary_as_serve_does(demo_model_in_cache, demo_model_dir):
    import json

    vocab = json.loads((demo_model_dir / "config.json").read_text())["vocab_size"]
    payload, rc = run_json("run", "SmolLM2", "hi", "--max-tokens", "2", "--temperature", "0.5", "--seed", "1",
                           "--top-k", str(vocab + 1))
    assert rc == 1 and payload["error"]["type"] == "ValidationError"
    assert payload["error"]["message"].startswith("--top-k:") and str(vocab) in payload["error"]["message"]
    payload, rc = run_json("run", "SmolLM2", "hi", "--max-tokens", "2", "--temperature", "0.5", "--seed", "1",
                           "--top-k", str(vocab))  # every token: sampling without a top-k filter
    assert rc == 0 and payload["data"]["tokens_generated"] == 2

"""Base models (no chat template): listed as ``base``, ``run`` completes plain text, and every
protocol's chat endpoint refuses them with its own 400 naming ``/v1/completions``.

The base model is the real demo model with its chat template taken out (hard links to the
demo's files, a new tokenizer_config.json): a real tokenizer and real weights, so what the
refusal spares (/v1/completions, ``mlxk run``) really generates.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import anthropic
import httpx2 as httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from mlxk.ops.demo import DEMO_REPO
from mlxk.store.cache import repo_folder_name
from tests.conftest import run_cli, run_json
from tests.schema import upstream_validate
from tests.serve_fixture import ServerProc

BASE_REPO = "mlxk-test/SmolLM2-135M-base"
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
PROMPT = "The capital of France is"
KEY = "sk-base"


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _without_template(src: Path) -> bytes:
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    return json.dumps(cfg, indent=2).encode()


def base_workspace(src: Path, dest: Path) -> Path:
    """A folder with the demo model's files, hard-linked, minus its chat template."""
    dest.mkdir(parents=True)
    for f in src.iterdir():
        if f.name not in ("tokenizer_config.json", *TEMPLATE_FILES):
            _link_or_copy(f.resolve(), dest / f.name)
    (dest / "tokenizer_config.json").write_bytes(_without_template(src))
    return dest


def base_in_cache(src: Path, hub: Path, repo_id: str = BASE_REPO) -> str:
    """The same as a cache repo (blobs, snapshot links, refs/main), as huggingface_hub lays it out."""
    repo = hub / repo_folder_name(repo_id)
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snap, blobs = repo / "snapshots" / commit, repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for f in src.iterdir():
        if f.name in TEMPLATE_FILES:
            continue
        if f.name == "tokenizer_config.json":
            content = _without_template(src)
            blob = blobs / hashlib.sha256(content).hexdigest()
            blob.write_bytes(content)
        else:
            blob = blobs / f.resolve().name  # the demo's blobs are named by their sha256 already
            _link_or_copy(f.resolve(), blob)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo_id


def chat_in_cache(template_home: Path, hub: Path) -> str:
    name = repo_folder_name(DEMO_REPO)
    shutil.copytree(template_home / "hub" / name, hub / name, symlinks=True,
                    copy_function=lambda s, d: _link_or_copy(Path(s), Path(d)))
    return DEMO_REPO


# --- list / show / run through the real CLI -----------------------------------------------------

def test_list_and_show_report_base(demo_model_dir, demo_template_home, hub_cache, tmp_path):
    base_in_cache(demo_model_dir, hub_cache)
    chat_in_cache(demo_template_home, hub_cache)
    ws = base_workspace(demo_model_dir, tmp_path / "base-ws")

    listed, rc = run_json("list")
    by_name = {m["name"]: m for m in listed["data"]["models"]}
    assert rc == 0 and set(by_name) == {BASE_REPO, DEMO_REPO}
    assert (by_name[BASE_REPO]["model_type"], by_name[BASE_REPO]["capabilities"]) == ("base", ["text-generation"])
    assert (by_name[DEMO_REPO]["model_type"], by_name[DEMO_REPO]["capabilities"]) == ("chat", ["text-generation", "chat"])
    assert by_name[BASE_REPO]["health"] == "healthy" and by_name[BASE_REPO]["runtime_compatible"] is True
    upstream_validate(listed)

    for spec, name in ((BASE_REPO, BASE_REPO), (str(ws), str(ws))):
        shown, rc = run_json("show", spec)
        assert (rc, shown["data"]["model"]["name"], shown["data"]["model"]["model_type"]) == (0, name, "base")
        upstream_validate(shown)
        human = run_cli("show", spec).stdout
        assert any(line.split() == ["Type:", "base"] for line in human.splitlines()), human
    ws_list, _ = run_json("list", str(ws))
    assert [(m["name"], m["model_type"]) for m in ws_list["data"]["models"]] == [(str(ws), "base")]

    # Human list: chat models by default (as MLX-Knife); --verbose adds the base models, typed so.
    default = run_cli("list").stdout
    assert "SmolLM2-135M-Instruct" in default and "SmolLM2-135M-base" not in default
    rows = {line.split()[0]: line.split() for line in run_cli("list", "--verbose").stdout.splitlines()[1:]}
    assert rows[BASE_REPO][-1] == "base" and rows[DEMO_REPO][-1] == "chat"


def test_run_completes_plain_text_and_says_so(demo_model_dir, tmp_path):
    ws = base_workspace(demo_model_dir, tmp_path / "base-ws")
    payload, rc = run_json("run", str(ws), PROMPT, "--max-tokens", "8", "--temperature", "0")
    assert rc == 0, payload
    d = payload["data"]
    assert (d["model"], d["model_type"], d["chat_template"]) == (str(ws), "base", False)
    assert d["response"].strip() and d["tokens_generated"] > 0
    from tokenizers import Tokenizer

    plain = Tokenizer.from_file(str(ws / "tokenizer.json")).encode(PROMPT).ids
    assert d["prompt_tokens"] == len(plain)  # the prompt alone: no template around it
    human = run_cli("run", str(ws), PROMPT, "--max-tokens", "8", "--temperature", "0")
    assert human.returncode == 0 and human.stdout.strip() == d["response"].strip()
    note = " ".join(human.stderr.split())
    assert "is a base model (no chat template): the prompt is completed as plain text" in note, human.stderr


def test_run_on_a_chat_model_keeps_its_template_and_no_note(demo_model_dir):
    payload, rc = run_json("run", str(demo_model_dir), PROMPT, "--max-tokens", "2")
    assert rc == 0 and (payload["data"]["model_type"], payload["data"]["chat_template"]) == ("chat", True)
    assert payload["data"]["prompt_tokens"] > 10  # the template's turn markers around the prompt
    assert "base model" not in run_cli("run", str(demo_model_dir), PROMPT, "--max-tokens", "2").stderr


# --- GGUF: a file without a chat template imports as a base model ------------------------------

def _gpt2_alphabet() -> list[str]:
    """GPT-2's byte-to-character table: a byte-level BPE vocabulary that covers every text."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), ord("\u00ff") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def tiny_llama_gguf(path: Path, chat_template: str | None) -> Path:
    """A real (random-weight) one-layer llama GGUF written with gguf-py, as llama.cpp lays it out."""
    import numpy as np
    from gguf import GGUFWriter

    tokens = [*_gpt2_alphabet(), "<|endoftext|>"]
    hidden, ffn, vocab = 64, 128, len(tokens)
    w = GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_block_count(1)
    w.add_feed_forward_length(ffn)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * 256 + [3])
    w.add_token_merges([])
    w.add_bos_token_id(vocab - 1)
    w.add_eos_token_id(vocab - 1)
    if chat_template:
        w.add_chat_template(chat_template)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,), "output.weight": (vocab, hidden),
              "blk.0.attn_norm.weight": (hidden,), "blk.0.ffn_norm.weight": (hidden,),
              "blk.0.attn_q.weight": (hidden, hidden), "blk.0.attn_k.weight": (32, hidden),
              "blk.0.attn_v.weight": (32, hidden), "blk.0.attn_output.weight": (hidden, hidden),
              "blk.0.ffn_gate.weight": (ffn, hidden), "blk.0.ffn_up.weight": (ffn, hidden),
              "blk.0.ffn_down.weight": (hidden, ffn)}
    for name, shape in shapes.items():
        w.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.mark.parametrize("template,kind", [(None, "base"), (CHATML, "chat")])
def test_gguf_import_never_invents_a_chat_template(tmp_path, template, kind):
    gguf = tiny_llama_gguf(tmp_path / "tiny.gguf", template)
    payload, rc = run_json("convert", str(gguf), str(tmp_path / "out"))
    assert rc == 0 and payload["data"]["health_status"] == "healthy", payload
    out = tmp_path / "out"
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg.get("chat_template") == template  # absent without one, verbatim with one
    assert not any((out / name).exists() for name in TEMPLATE_FILES)
    shown, _ = run_json("show", str(out))
    assert (shown["data"]["model"]["model_type"], "chat" in shown["data"]["model"]["capabilities"]) == (
        kind, kind == "chat")


@pytest.mark.parametrize("template,kind", [(None, "base"), (CHATML, "chat")])
def test_a_gguf_file_in_the_cache_is_base_without_a_template(cache, tmp_path, template, kind):
    gguf = tiny_llama_gguf(tmp_path / "tiny.gguf", template)
    cache.add("someone/tiny-GGUF", {"tiny-f32.gguf": gguf.read_bytes()})
    listed, _ = run_json("list")
    (m,) = listed["data"]["models"]
    assert (m["framework"], m["model_type"]) == ("GGUF", kind)


# --- the four protocols against a real server ---------------------------------------------------

@pytest.fixture(scope="module")
def server(demo_model_dir, demo_template_home, tmp_path_factory):
    """Default model: a base workspace. In the server's cache: the base model and the chat demo."""
    tmp = tmp_path_factory.mktemp("base-serve")
    hub = tmp / "hf_home" / "hub"
    hub.mkdir(parents=True)
    base_in_cache(demo_model_dir, hub)
    chat_in_cache(demo_template_home, hub)
    ws = base_workspace(demo_model_dir, tmp / "SmolLM2-base-ws")
    srv = ServerProc(ws, tmp, env={"MLXK_API_KEY": KEY}).wait_ready()
    srv.ws = ws
    yield srv
    srv.stop()


DEFAULT = "SmolLM2-base-ws"  # the default model by its folder name (no path over HTTP)
BASE_NAMES = [DEFAULT, BASE_REPO]


def _says_completions(message: str, name: str) -> None:
    assert "base model" in message and "/v1/completions" in message and name in message, message


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=server.base + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.mark.parametrize("name", BASE_NAMES)
def test_openai_chat_refuses_a_base_model(oai, name):
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as e:
            oai.chat.completions.create(model=name, messages=[{"role": "user", "content": PROMPT}],
                                        max_tokens=4, stream=stream)
        err = e.value.body
        assert (err["param"], err["code"], err["type"]) == ("model", "model_not_chat", "invalid_request_error")
        _says_completions(err["message"], name)


@pytest.mark.parametrize("name", BASE_NAMES)
def test_responses_refuses_a_base_model(oai, name):
    with pytest.raises(openai.BadRequestError) as e:
        oai.responses.create(model=name, input=PROMPT, max_output_tokens=16)
    _says_completions(e.value.body["message"], name)


@pytest.mark.parametrize("name", BASE_NAMES)
def test_anthropic_messages_refuse_a_base_model(server, name):
    client = anthropic.Anthropic(base_url=server.base, api_key=KEY, max_retries=0, timeout=120)
    msgs = [{"role": "user", "content": PROMPT}]
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=name, max_tokens=4, messages=msgs)
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "invalid_request_error"
    _says_completions(e.value.body["error"]["message"], name)
    with pytest.raises(anthropic.BadRequestError):  # no template, so no count of a chat either
        client.messages.count_tokens(model=name, messages=msgs)
    with pytest.raises(anthropic.BadRequestError):  # streaming: refused before the stream opens
        with client.messages.stream(model=name, max_tokens=4, messages=msgs) as s:
            list(s.text_stream)


@pytest.mark.parametrize("name", BASE_NAMES)
def test_gemini_refuses_a_base_model(server, name):
    client = genai.Client(api_key=KEY, http_options=genai_types.HttpOptions(base_url=server.base, timeout=120_000))
    cfg = genai_types.GenerateContentConfig(max_output_tokens=4)
    with pytest.raises(genai_errors.ClientError) as e:
        client.models.generate_content(model=name, contents=PROMPT, config=cfg)
    assert (e.value.code, e.value.status) == (400, "INVALID_ARGUMENT")
    _says_completions(e.value.message, name)
    with pytest.raises(genai_errors.ClientError) as e:
        list(client.models.generate_content_stream(model=name, contents=PROMPT, config=cfg))
    assert e.value.code == 400
    with pytest.raises(genai_errors.ClientError) as e:
        client.models.count_tokens(model=name, contents=PROMPT)
    assert e.value.code == 400


def test_completions_still_serve_a_base_model(server, oai):
    """What the refusal points to works, and is the same greedy text ``mlxk run`` completes."""
    texts = []
    for name in BASE_NAMES:
        r = oai.completions.create(model=name, prompt=PROMPT, max_tokens=8, temperature=0)
        assert r.choices[0].text.strip() and r.usage.completion_tokens > 0
        texts.append(r.choices[0].text)
    assert texts[0] == texts[1]
    payload, rc = run_json("run", str(server.ws), PROMPT, "--max-tokens", "8", "--temperature", "0")
    assert rc == 0 and payload["data"]["response"] == texts[0]


def test_chat_models_on_the_same_server_still_chat(oai, server):
    r = oai.chat.completions.create(model=DEMO_REPO, messages=[{"role": "user", "content": "Say hi."}], max_tokens=3)
    assert r.choices[0].message.content and r.model == DEMO_REPO
    assert httpx.get(server.base + "/health").status_code == 200

"""From a request to prompt tokens: chat template, tools, and prefix-cache boundaries.

Runs on the engine thread (the tokenizer is never used concurrently). The boundaries are
where a snapshot is worth keeping: the end of the shared system prompt and the end of the
conversation so far (the next turn starts with it).
"""

from __future__ import annotations

from typing import Any

from mlxk.engine.requests import GenerationRequest


def text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
    return str(content)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def disk_bounds(req: GenerationRequest, bounds: list[int]) -> tuple[int, ...]:
    """The boundaries worth a disk snapshot: the shared system prompt's end always; the
    conversation's end (the longest boundary) only once the conversation has continued (an
    assistant turn is in it), since one-shot requests rarely come back for a next turn and
    each such snapshot is megabytes. RAM keeps every boundary either way."""
    if not bounds:
        return ()
    end = max(bounds)
    goes_on = any(isinstance(m, dict) and m.get("role") == "assistant" for m in (req.messages or []))
    return tuple(sorted(b for b in set(bounds) if b != end or goes_on))


def tokenize_request(tok, req: GenerationRequest, want_bounds: bool) -> tuple[list[int], list[int]]:
    """Prompt tokens and snapshot boundaries (end of the system prompt, of the conversation)."""
    if req.messages is not None:
        messages = []
        for m in req.messages:
            msg = dict(m)
            msg["content"] = text_of(m.get("content"))
            messages.append(msg)
        if getattr(tok, "has_chat_template", False) or getattr(tok, "chat_template", None):
            kwargs = {"tools": req.tools} if req.tools else {}

            def render(msgs, gen):
                out = tok.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=True, **kwargs)
                if isinstance(out, dict) or hasattr(out, "input_ids"):
                    out = out["input_ids"]
                return list(out)

            prompt = render(messages, True)
            bounds = []
            if want_bounds:
                n_sys = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
                probes = [messages]
                if 0 < n_sys < len(messages):
                    probes.insert(0, messages[:n_sys] + [{"role": "user", "content": ""}])
                for probe in probes:
                    try:
                        bounds.append(common_prefix(render(probe, False), prompt))
                    except Exception:  # templates that reject a probe: no boundary there
                        pass
            return prompt, bounds
        from mlx_lm.server import convert_chat

        return list(tok.encode(convert_chat(messages))), []
    if isinstance(req.prompt, list):
        return [int(t) for t in req.prompt], []
    return list(tok.encode(req.prompt or "")), []

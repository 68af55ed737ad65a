"""Talks to `hybrid-runtime serve` with the official OpenAI Python client, unchanged.

    python scripts/openai-client-check.py <base_url> <model>

Prints one JSON object (answer, streamed answer, model ids, citations seen) and exits non-zero
when the client cannot parse a response or the two answers differ. Used by
runtime/tests/serve_openai.rs; needs the venv from scripts/openai-env.sh.
"""
import json
import sys

import openai


def main() -> int:
    base_url, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    ids = [m.id for m in client.models.list()]
    assert model in ids, f"{model} not in {ids}"
    question = "What did the Velorian Monetary Authority cut its policy rate to in February 2026?"
    messages = [{"role": "user", "content": question}]
    reply = client.chat.completions.create(
        model=model, messages=messages, max_tokens=16, temperature=0, seed=1
    )
    answer = reply.choices[0].message.content
    assert answer, "empty answer"
    assert reply.usage.completion_tokens >= 1
    extra = reply.model_extra or {}
    citations = extra.get("citations", [])
    streamed = ""
    final = None
    for chunk in client.chat.completions.create(
        model=model, messages=messages, max_tokens=16, temperature=0, seed=1, stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            streamed += chunk.choices[0].delta.content
        final = chunk
    assert streamed == answer, f"stream {streamed!r} != {answer!r}"
    assert final is not None and final.choices[0].finish_reason in ("stop", "length")
    embedding = client.embeddings.create(model=model, input=["rates", "equities"])
    dims = [len(d.embedding) for d in embedding.data]
    try:
        client.chat.completions.create(model="no-such-model", messages=messages)
        raise AssertionError("unknown model was accepted")
    except openai.NotFoundError as e:
        not_found = str(e)
    print(json.dumps({
        "models": ids,
        "answer": answer,
        "streamed": streamed,
        "citations": [c["document"] for c in citations],
        "embedding_dims": dims,
        "not_found": not_found,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

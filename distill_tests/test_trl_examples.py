"""The TRL examples of docs/datasets.md, run as written for one step each on the fixture run's
exports, with a tiny model built here from a config (no download) in place of the model id.

The training tests skip when the optional ``trl`` extra (trl, torch, transformers) is not
installed; the test of the doc's examples themselves needs none of it and always runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from distill_tests.conftest import REPO_ROOT

DOC = REPO_ROOT / "docs" / "datasets.md"
MODEL_ID = "Qwen/Qwen2.5-0.5B-Instruct"
# a chat template that renders any turn (content may be null beside tool calls)
TEMPLATE = (
    "{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] or '' }}"
    "{% for c in m.get('tool_calls') or [] %} {{ c['function']['name'] }}"
    "({{ c['function']['arguments'] }}){% endfor %}<|eos|>{% endfor %}"
    "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
)


def trl_examples() -> list[str]:
    """The Python blocks of the doc that train with TRL, in order."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return [block for block in blocks if "from trl import" in block]


def texts(out: Path) -> list[str]:
    """Every string in the exported files, to train the tiny tokenizer on."""
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for path in sorted((out / "exports").rglob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            walk(orjson.loads(line))
    return found


def build_tiny_model(directory: Path, corpus: list[str]) -> None:
    """A byte-level BPE tokenizer trained on ``corpus`` and a one-layer Llama from a config."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|pad|>", "<|eos|>", "<|bos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<|pad|>", eos_token="<|eos|>", bos_token="<|bos|>"
    )
    fast.chat_template = TEMPLATE
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
        bos_token_id=fast.bos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    fast.save_pretrained(directory)


def need_trl() -> None:
    for module in ("torch", "transformers", "trl"):
        pytest.importorskip(
            module, reason="the trl extra is not installed: pip install -e '.[trl]'"
        )


@pytest.fixture(scope="module")
def tiny_model(fixture_run, tmp_path_factory) -> Path:
    need_trl()
    _, out, _ = fixture_run
    directory = tmp_path_factory.mktemp("tiny_model")
    build_tiny_model(directory, texts(out))
    return directory


def test_doc_has_one_example_per_export():
    trainers = [re.search(r"from trl import (\w+), (\w+)", b).group(2) for b in trl_examples()]
    assert trainers == ["SFTTrainer", "DPOTrainer", "KTOTrainer"]
    for block in trl_examples():
        assert len(block.strip().splitlines()) <= 10
        assert MODEL_ID in block and 'data_files="out/exports/' in block


@pytest.mark.parametrize("number", [0, 1, 2], ids=["sft", "dpo", "kto"])
def test_doc_example_trains_one_step(number, fixture_run, tiny_model, tmp_path, monkeypatch):
    _, out, _ = fixture_run
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may come from the network
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    block = trl_examples()[number]
    code = block.replace(MODEL_ID, str(tiny_model)).replace('"out/', f'"{out}/')
    # the example's own settings, plus what makes it one CPU step that writes nothing
    code, changed = re.subn(
        r'output_dir="([^"]+)"', rf'output_dir="{tmp_path}/\1", **ONE_STEP', code
    )
    assert changed == 1
    one_step = dict(
        max_steps=1,
        per_device_train_batch_size=2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,
    )
    scope: dict[str, object] = {"ONE_STEP": one_step}
    exec(compile(code, f"docs/datasets.md example {number + 1}", "exec"), scope)
    trainer = scope["trainer"]
    assert trainer.state.global_step == 1
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses and all(loss == loss for loss in losses)  # a number, not NaN

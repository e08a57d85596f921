"""Chat templates for GGUFs that carry none (``tokenizer.chat_template`` absent), chosen like
llama-server's built-ins: by name (``--chat-template gemma``), else by the architecture; ChatML
otherwise. A template file may be given instead. All render in jinja2's sandbox (runtime.chat.render)."""
from __future__ import annotations

import os

BUILTIN = {
    "chatml": (
        "{%- for message in messages -%}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"),
    "gemma": (   # Gemma 2/3 (as the HF tokenizer_config's template, text only)
        "{{ bos_token }}"
        "{%- if messages[0]['role'] == 'system' -%}"
        "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}{%- set loop_messages = messages[1:] -%}"
        "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
        "{%- for message in loop_messages -%}"
        "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
        "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') "
        "+ message['content'] | trim + '<end_of_turn>\\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"),
}
BY_ARCH = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma"}


def chat_template(gguf, arch: str, choice: str | None = None) -> tuple[str, str]:
    """(template text, where it came from): ``choice`` (a built-in name or a file), else the GGUF's,
    else the architecture's built-in, else ChatML."""
    if choice:
        if choice in BUILTIN:
            return BUILTIN[choice], f"built-in {choice}"
        if os.path.isfile(choice):
            with open(choice, encoding="utf-8") as f:
                return f.read(), choice
        raise ValueError(f"--chat-template {choice!r}: neither a built-in ({', '.join(BUILTIN)}) nor a file")
    t = gguf.get("tokenizer.chat_template") if gguf is not None else None
    if t:
        return t, "the GGUF"
    name = BY_ARCH.get(arch, "chatml")
    return BUILTIN[name], f"built-in {name} (the GGUF has none)"

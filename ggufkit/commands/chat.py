"""``ggufkit chat``: one user message per stdin line, replies streamed (or JSON lines)."""
from __future__ import annotations

import json
import sys

from ggufkit.errors import GGUFKitError
from runtime.chat import THINK_CLOSE, THINK_OPEN, ChatSession
from runtime.generate import GREEDY, SamplingParams


class ThinkPrinter:
    """Streams text, showing <think> sections distinctly (dim on a terminal, else bracketed)."""

    def __init__(self, out, tty: bool):
        self.out, self.buf, self.inside = out, "", False
        self.on, self.off = ("\x1b[2m", "\x1b[0m") if tty else ("[thinking] ", " [/thinking]")

    def __call__(self, s: str) -> None:
        self.buf += s
        while True:
            tag = THINK_CLOSE if self.inside else THINK_OPEN
            i = self.buf.find(tag)
            if i >= 0:
                self.out.write(self.buf[:i] + (self.off if self.inside else self.on))
                self.buf, self.inside = self.buf[i + len(tag):], not self.inside
                continue
            keep = next((n for n in range(len(tag) - 1, 0, -1) if self.buf.endswith(tag[:n])), 0)
            self.out.write(self.buf[:len(self.buf) - keep])
            self.buf = self.buf[len(self.buf) - keep:]
            break
        self.out.flush()

    def end(self) -> None:
        self.out.write(self.buf + (self.off if self.inside else "") + "\n")
        self.buf, self.inside = "", False
        self.out.flush()


def read_tools(tools_file: str | None):
    """``--tools``: a JSON file with the list of tools offered to the template."""
    if not tools_file:
        return None
    try:
        with open(tools_file, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GGUFKitError(f"{tools_file}: cannot read tools JSON ({e})") from None


def chat_loop(model_path: str, system: str | None = None, reasoning: str | None = None, json_mode: bool = False,
              n_threads: int | None = None, params: SamplingParams = GREEDY, n_ctx: int = 4096,
              max_tokens: int = 1024, tools_file: str | None = None, stdin=None, stdout=None, dev=None) -> list[dict]:
    """One user message per stdin line; replies streamed (or one JSON object per line with
    json_mode). Returns the conversation. Ctrl-C / EOF ends it."""
    from runtime.loader import load
    from runtime.plan import place_model

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    tools = read_tools(tools_file)
    model = load(model_path, n_threads=n_threads)
    model.step_background = True    # decode layer programs compile in a child process meanwhile
    place_model(model, dev, n_ctx)
    session = ChatSession(model, system, reasoning, tools, params, n_ctx, max_tokens)
    tty = hasattr(stdout, "isatty") and stdout.isatty()
    try:
        for line in stdin:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if json_mode:
                reply = session.send(line)
                stdout.write(json.dumps(reply.to_json(), ensure_ascii=False) + "\n")
                stdout.flush()
            else:
                printer = ThinkPrinter(stdout, tty)
                session.send(line, on_text=printer)
                printer.end()
    except KeyboardInterrupt:
        stdout.write("\n")
    return session.messages

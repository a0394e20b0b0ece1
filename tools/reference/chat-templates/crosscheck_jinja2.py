#!/usr/bin/python3
"""Renders every case of vectors.jsonl again with Python's Jinja2 (Debian's python3-jinja2), set up the way
transformers' apply_chat_template sets it up: ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True) with loop controls, a {% generation %} tag that renders its body, tojson as
json.dumps(ensure_ascii=False, indent=None, separators=None, sort_keys=False), raise_exception and
strftime_now. Where Python's output differs from @huggingface/jinja's (or only one of them renders), the case
gets "jinja2" (the text) or "jinja2_error" (the message); C# follows Python there, because Hugging Face
renders chat templates with Python's Jinja2. Rewrites vectors.jsonl in place and prints a summary.

    apt-get install python3-jinja2 && /usr/bin/python3 crosscheck_jinja2.py
"""
import json
import pathlib
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

DATA = pathlib.Path(__file__).resolve().parents[3] / "tests" / "VteKernels.Tests" / "Data" / "chat-templates"


class GenerationBlock(Extension):
    """{% generation %}...{% endgeneration %}: renders the body (transformers also records its span)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, jinja2.ext.loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now


def render(source, context):
    try:
        return env.from_string(source).render(**context), None
    except Exception as e:  # noqa: BLE001 - any failure is a result to record
        return None, str(e)


def main():
    path = DATA / "vectors.jsonl"
    templates = {}
    out, agree, differ = [], 0, []
    for line in path.read_text(encoding="utf-8").splitlines():
        v = json.loads(line)
        v.pop("jinja2", None)
        v.pop("jinja2_error", None)
        name = v["template_name"]
        if "template" in v:
            source = v["template"]
        else:
            if name not in templates:
                templates[name] = (DATA / "templates" / f"{name}.jinja").read_text(encoding="utf-8")
            source = templates[name]
        context = dict(v.get("variables", {}))
        if "messages" in v:
            context["messages"] = v["messages"]
        if "add_generation_prompt" in v:
            context["add_generation_prompt"] = v["add_generation_prompt"]
        text, error = render(source, context)
        js_text, js_error = v.get("expected"), v.get("error")
        same = (text == js_text) if error is None else (js_error is not None and error == js_error)
        if same:
            agree += 1
        else:
            if error is None:
                v["jinja2"] = text
            else:
                v["jinja2_error"] = error
            differ.append(f"{name} [{v.get('case')}]: js={'error' if js_error is not None else 'text'} python={'error' if error else 'text'}")
        out.append(json.dumps(v, ensure_ascii=False))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    print(f"jinja2 {jinja2.__version__}: {agree} cases agree with @huggingface/jinja, {len(differ)} differ")
    for d in differ:
        print("  " + d)


if __name__ == "__main__":
    main()

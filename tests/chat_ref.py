#!/usr/bin/python3
"""Golden outputs for tests/test_chat_template.c.

Renders every chat template shipped in conf/ and the extra templates in
tests/data/templates/ over a set of conversations, plus one small template
per Jinja2 construct, with Jinja2 configured exactly as transformers
configures it (transformers/utils/chat_template_utils.py):
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
extensions=[AssistantTracker, loopcontrols]), tojson = json.dumps with
ensure_ascii=False, raise_exception and strftime_now globals. The
AssistantTracker's {% generation %} tag renders its body unchanged.

Writes tests/data/templates/expected.json (committed). Run from the
repository root with Debian's Jinja2 (3.1.2):

    /usr/bin/python3 tests/chat_ref.py
"""
import copy
import datetime
import json
import os
import sys

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

OUT = "tests/data/templates/expected.json"
# The instant strftime_now renders (2025-12-31 23:30:00 UTC, already 2026 in
# UTC+1 and later zones), written into expected.json as "now": the goldens
# compare against a fixed clock, never today's.
NOW = 1767223800

TEMPLATES = {
    "template_llava": "conf/template_llava.jinja",
    "llava15": "conf/llava15.jinja",
    "phi3v": "conf/phi3v.jinja",
    "qwen2vl": "conf/qwen2vl.jinja",
    "llama3": "tests/data/templates/llama3.jinja",
    "mistral": "tests/data/templates/mistral.jinja",
    "chatml_tools": "tests/data/templates/chatml_tools.jinja",
    "zephyr_indented": "tests/data/templates/zephyr_indented.jinja",
}


class Generation(jinja2.ext.Extension):
    """transformers' AssistantTracker without the tracking: the body as is."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        call = self.call_method("_generation_support")
        return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _generation_support(self, caller):
        return caller()


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        # the golden clock: NOW in UTC, as vd_chat_render_opts.fixed_now
        # renders it (transformers itself uses the real clock)
        return datetime.datetime.fromtimestamp(NOW, tz=datetime.timezone.utc).strftime(format)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True,
        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


# ---- conversations ----

IMG = {"type": "image"}
IMG_URL = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
VIDEO = {"type": "video"}


def text(t):
    return {"type": "text", "text": t}


TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city — «metric» units",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name"},
            "days": {"type": "integer", "minimum": 1, "maximum": 7}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two numbers",
        "parameters": {"type": "object", "properties": {
            "a": {"type": "number"}, "b": {"type": "number"}}}}},
]

CONVERSATIONS = [
    ("user_only", [{"role": "user", "content": "What is in this image?"}], {}),
    ("user_only_no_gen", [{"role": "user", "content": "Hello there."}],
     {"add_generation_prompt": False}),
    ("system_user", [{"role": "system", "content": "You are terse."},
                     {"role": "user", "content": "Name a color."}], {}),
    ("multi_turn", [{"role": "system", "content": "Be helpful."},
                    {"role": "user", "content": "Hi!"},
                    {"role": "assistant", "content": "Hello! How can I help?"},
                    {"role": "user", "content": "Tell me a joke."}], {}),
    ("ends_with_assistant", [{"role": "user", "content": "2+2?"},
                             {"role": "assistant", "content": "4"}],
     {"add_generation_prompt": False}),
    ("ends_with_assistant_gen", [{"role": "user", "content": "2+2?"},
                                 {"role": "assistant", "content": "4"}], {}),
    ("unicode", [{"role": "user",
                  "content": "Ça va? 中文 😀 — «quotes» \u05e9\u05dc\u05d5\u05dd\ttab\nnewline"}], {}),
    ("empty_content", [{"role": "user", "content": ""}], {}),
    ("whitespace_content", [{"role": "user", "content": "  padded \n\n"},
                            {"role": "assistant", "content": "\t answer \t"},
                            {"role": "user", "content": "\u3000wide\u00a0"}], {}),
    ("braces_and_quotes", [{"role": "user",
                            "content": "{{ not a tag }} {% nor this %} {# nor #} 'single' \"double\" \\back"}], {}),
    ("list_text_only", [{"role": "user", "content": [text("Describe the scene.")]}], {}),
    ("list_image_then_text", [{"role": "user", "content": [IMG, text("What is this?")]}], {}),
    ("list_text_then_image", [{"role": "user", "content": [text("Look:"), IMG]}], {}),
    ("list_two_images", [{"role": "user",
                          "content": [IMG, IMG, text("Compare the two pictures.")]}], {}),
    ("list_image_url", [{"role": "user", "content": [IMG_URL, text("Caption it.")]}], {}),
    ("list_multi_turn", [{"role": "user", "content": [IMG, text("What animal?")]},
                         {"role": "assistant", "content": [text("A cat.")]},
                         {"role": "user", "content": [text("And its color?")]}], {}),
    ("list_system", [{"role": "system", "content": [text("You describe images.")]},
                     {"role": "user", "content": [IMG, text("Go.")]}], {}),
    ("list_empty_text", [{"role": "user", "content": [IMG, text("")]}], {}),
    ("other_tokens", [{"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Yo"},
                      {"role": "user", "content": "Bye"}],
     {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot|>"}),
    ("long_dialog", [{"role": "system", "content": "S"}] +
     [{"role": "user" if i % 2 == 0 else "assistant", "content": "turn %d" % i}
      for i in range(9)], {}),
    ("vision_ids", [{"role": "user", "content": [IMG, text("one"), IMG, text("two")]}],
     {"add_vision_id": True}),
    ("video", [{"role": "user", "content": [VIDEO, text("What happens?")]}],
     {"add_vision_id": True}),
    ("crlf_content", [{"role": "user", "content": "line1\r\nline2\rline3"}], {}),
    ("system_only", [{"role": "system", "content": "Only a system prompt."}], {}),
    ("roles_not_alternating", [{"role": "user", "content": "a"},
                               {"role": "user", "content": "b"}], {}),
    ("no_messages", [], {}),
    ("tools_call", [{"role": "system", "content": "Use tools when useful."},
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": "",
                     "tool_calls": [{"type": "function", "function": {
                         "name": "get_weather",
                         "arguments": {"city": "Paris", "days": 2}}}]},
                    {"role": "tool", "content": "{\"temp\": 21.5}"},
                    {"role": "user", "content": "Thanks"}],
     {"tools": TOOLS, "date_string": "26 Jul 2024"}),
    ("tools_no_call", [{"role": "user", "content": "Add 2 and 3"}],
     {"tools": TOOLS, "date_string": "26 Jul 2024", "tools_in_user_message": False}),
    ("reasoning", [{"role": "user", "content": "Think first."},
                   {"role": "assistant",
                    "content": "<think>\nstep one\nstep two\n</think>\n\nThe answer is 42."},
                   {"role": "user", "content": "Again?"}], {}),
    ("tool_results_grouped", [{"role": "user", "content": "Use both."},
                              {"role": "assistant", "content": "Calling.",
                               "tool_calls": [
                                   {"function": {"name": "add", "arguments": "{\"a\": 1, \"b\": 2}"}},
                                   {"function": {"name": "get_weather",
                                                 "arguments": {"city": "Oslo"}}}]},
                              {"role": "tool", "content": "3"},
                              {"role": "tool", "content": "cold"}],
     {"tools": TOOLS, "date_string": "26 Jul 2024"}),
]

BASE_CONTEXT = {"add_generation_prompt": True, "bos_token": "<s>", "eos_token": "</s>",
                "tools": None, "documents": None}


# ---- one small template per construct (context in the second item) ----

D = {"a": 1, "b": "two", "n": None, "l": [1, 2, 3], "s": "Hello World",
     "f": 2.5, "t": True, "msgs": [{"role": "user", "content": "hi"},
                                   {"role": "assistant", "content": "yo"}],
     "parts": [{"type": "image"}, {"type": "text", "text": "hey"},
               {"type": "text", "text": "you"}, {"type": "image_url", "image_url": {"url": "u"}}],
     "nested": {"x": {"y": [10, 20, {"z": "deep"}]}}, "u": "ünïcødé ß ǅ"}

UNIT = [
    # text, whitespace control, trim_blocks / lstrip_blocks
    ("plain text", {}),
    ("line1\nline2\n", {}),
    ("a\r\nb\rc\n\n", {}),
    ("{% if true %}\nyes\n{% endif %}\nafter", {}),
    ("  {% if true %}\n  in\n  {% endif %}\n", {}),
    ("x  {% if true %}y{% endif %}  z", {}),
    ("a\n  {%+ if true %}b{% endif %}", {}),
    ("a\n  {%- if true %}b{% endif %}", {}),
    ("{% if true -%}\n\n   b  {%- endif %}\n!", {}),
    ("{% if true +%}\nkeep{% endif %}", {}),
    ("{{ 'a' }}\n{{ 'b' }}\n", {}),
    ("  {{ 'v' }}  \n", {}),
    ("a  {{- 'v' -}}  b", {}),
    ("{# comment #}\nnext", {}),
    ("  {# indented comment #}\nnext", {}),
    ("a {#- strip -#} b", {}),
    ("a\n{#+ keep #}\nb", {}),
    ("{% raw %}{{ not rendered }}{% endraw %}", {}),
    ("  {% raw %}\n  x {{ y }}\n  {% endraw %}\nz", {}),
    ("a {%- raw -%}  b  {%- endraw -%} c", {}),
    ("{% for i in [1,2] %}\n  {{ i }}\n{% endfor %}\n", {}),
    ("{% for i in [1,2] %}\n    {% if i == 1 %}\n    one\n    {% endif %}\n{% endfor %}", {}),
    ("{%- for i in [1,2] -%}\n {{ i }} \n{%- endfor -%}", {}),
    ("text\n    {{ 'expr' }} after\n    {% if true %}blk{% endif %}\n", {}),
    ("\t{% if true %}tab{% endif %}\n", {}),
    ("{% if true %}a{% endif %}   {% if true %}b{% endif %}", {}),
    ("{{ 1 }}   {% if true %}\nq{% endif %}", {}),
    ("{{- 'x' -}}\n\n{% if true %}\n  y\n{% endif %}\n\n", {}),
    ("{% if true %}\r\nwin\r\n{% endif %}\r\n", {}),
    ("{{ {'a': {'b': 1}} }}", {}),
    ("{{ 'trailing' }}\n", {}),
    ("{{ 'two trailing' }}\n\n", {}),
    ("{%- if true %}start{% endif %}", {}),
    ("   {% if true %}x{% endif %}", {}),
    ("abc  {% if true %}x{% endif %}\n  {% if true %}y{% endif %}", {}),
    ("\u3000\t{% if true %}wide{% endif %}|a\u00a0{%- if true %}b{% endif %}", {}),
    ("  {{ 'a' }}  {% if true %}b{% endif %}", {}),
    ("{{ 'a' -}}\n   {% if true %}b{% endif %}", {}),
    ("{% if true %}   \nx{% endif %}", {}),
    ("{% if true %}\n\nx{% endif %}", {}),
    ("{% raw %}{% raw %}{{ x }}{%- endraw %}|", {}),
    ("{% raw -%}\n  kept{% endraw +%}\nnext", {}),
    ("{{ '}}' }}{{ '%}' }}{{ {'a': 1}['a'] }}{% set x = {'k': '%}'} %}{{ x.k }}", {}),
    ("a { b } c {", {}),
    ("{# a #}{# b -#}   \n\n  c {#- d #}e", {}),
    ("{#\nmulti\nline\n#}\n  {% if true %}x\n{% endif %}", {}),
    ("{% for x in [1] -%}\n  {{ x }}\n{%- endfor %}\n\nend", {}),
    ("{%- for x in [1, 2] %}\n  - {{ x }}\n{%- endfor %}", {}),
    ("{% for m in msgs %}\n<{{ m.role }}>\n  {{ m.content }}\n{% endfor %}", D),
    ("{{ 'x' }}\n\n", {}),
    ("{%+ if true %}keep-indent{% endif %}", {}),
    ("  {%+ if true %}\nq{% endif %}", {}),
    ("{% if true %}a{%+ endif +%}\n{{ 'b' }}", {}),
    ("{{ \"quote's\" }}{{ 'it\\'s' }}", {}),
    ("{{", {}),
    ("{% if true", {}),
    ("{{ x }", {}),
    # literals
    ("{{ 'single' }}{{ \"double\" }}{{ 'a' 'b' \"c\" }}", {}),
    ("{{ 'esc\\n\\t\\\\\\'\\\"\\x41\\u00e9\\U0001F600\\101\\q' }}", {}),
    ("{{ 'multi\nline' }}", {}),
    ("{{ 42 }} {{ -7 }} {{ 1_000 }} {{ 0x1f }} {{ 0o17 }} {{ 0b101 }}", {}),
    ("{{ 1.5 }} {{ 1e3 }} {{ 2.5e-3 }} {{ 1.0 }} {{ 100.0 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }}", {}),
    ("{{ 0.1 + 0.2 }} {{ 1/3 }} {{ 2**0.5 }} {{ 1e300*10 }} {{ -0.0 }} {{ 123456789.123456789 }}", {}),
    ("{{ true }} {{ false }} {{ True }} {{ False }} {{ none }} {{ None }}", {}),
    ("{{ [1, 'a', none, true, 1.5, [2], {'k': 'v'}] }}", {}),
    ("{{ (1, 2) }} {{ ('x',) }} {{ () }} {{ [] }} {{ {} }}", {}),
    ("{{ {'a': 1, 'b': [1, 2], 3: 'x', none: true} }}", {}),
    ("{{ [\"it's\", 'say \"hi\"', 'both \\' \"', 'back\\\\slash', 'nl\\n', 'ctl\\x01\\x7f', 'uni é\\u00a0\\u200b\\u2028'] }}", {}),
    ("{{ 1, 2 }}", {}),
    # variables, attributes, items
    ("{{ a }}|{{ b }}|{{ n }}|{{ l }}|{{ s }}|{{ f }}|{{ t }}", D),
    ("{{ missing }}|{{ missing is defined }}|{{ missing is undefined }}", D),
    ("{{ msgs[0]['role'] }} {{ msgs[0].content }} {{ msgs[-1].role }} {{ msgs.1.content }}", D),
    ("{{ nested.x.y[2].z }} {{ nested['x']['y'][-1]['z'] }} {{ nested.x.y.0 }}", D),
    ("{{ l[0] }}{{ l[-1] }}{{ l[1:] }}{{ l[:-1] }}{{ l[::-1] }}{{ l[::2] }}{{ l[5:] }}{{ l[-10:2] }}", D),
    ("{{ s[0] }}{{ s[-1] }}{{ s[1:4] }}{{ s[::-1] }}{{ u[1] }}{{ u[::-1] }}{{ u[2:5] }}", D),
    ("{{ l[10] }}|{{ s[99] }}|{{ msgs[0].nope }}|{{ msgs[0]['nope'] }}", D),
    ("{{ msgs[0].nope }}", D),
    ("{{ d.x }}", {"d": {"x": "from key"}}),
    ("{{ missing.attr }}", {}),
    ("{{ missing['key'] }}", {}),
    ("{{ msgs[0].nope.deeper }}", D),
    ("{{ l[10].x }}", D),
    ("{{ none.attr }}|{{ a.attr }}", D),
    ("{{ 'abc'.nomethod }}", {}),
    ("{{ 'abc'.nomethod() }}", {}),
    # arithmetic and operators
    ("{{ 1 + 2 }} {{ 1 - 5 }} {{ 2 * 3 }} {{ 7 / 2 }} {{ 4 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }}", {}),
    ("{{ 1.5 + 1 }} {{ 10 % 3.5 }} {{ -7.5 // 2 }} {{ 7.5 % -2 }} {{ true + 1 }} {{ 3 * true }}", {}),
    ("{{ 'ab' + 'cd' }} {{ 'ab' * 3 }} {{ 3 * 'x' }} {{ [1] + [2] }} {{ [0] * 3 }} {{ 'x' * 0 }}", {}),
    ("{{ 'a' ~ 1 ~ 1.5 ~ none ~ true ~ [1] ~ missing }}", {}),
    ("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 10 - 2 - 3 }} {{ 'a' ~ 1 + 2 }}", {}),
    ("{{ -l|length }} {{ - 3|abs }} {{ not true }} {{ not none }}", D),
    ("{{ 'a' + 1 }}", {}),
    ("{{ 1 + 'a' }}", {}),
    ("{{ missing + 1 }}", {}),
    ("{{ 1 / 0 }}", {}),
    ("{{ 1 // 0 }}", {}),
    ("{{ [1] + (2,) }}", {}),
    ("{{ -'a' }}", {}),
    ("{{ '%s-%d' % ('a', 3) }} {{ '%5s|%-5s|' % ('ab', 'cd') }} {{ '%.2f %e %g %G' % (3.14159, 1234.5, 0.0001, 1e20) }} {{ '%05d %+d % d %x %X %o %#x' % (42, 5, 5, 255, 255, 8, 255) }}", {}),
    ("{{ '%(name)s is %(age)d' % {'name': 'Ann', 'age': 30} }} {{ '%s' % [1, 2] }} {{ '%s' % none }} {{ '%r' % 'q' }} {{ '%c%c' % (72, 'i') }} {{ '100%%' % () }} {{ '%.3s' % 'abcdef' }} {{ '%3s|' % 'é' }}", {}),
    ("{{ 'abc' % {} }} {{ 'abc' % [] }} {{ '%i %u' % (3.9, -2) }} {{ '%s %s' % ('a', 'b') }}", {}),
    ("{{ 'x' % missing }}|{{ '%s' % missing }}|{{ '' % [] }}", {}),
    ("{{ '%(k)s' % missing }}", {}),
    ("{{ '%s %s' % ('a',) }}", {}),
    ("{{ '%s' % ('a', 'b') }}", {}),
    ("{{ '%d' % 'x' }}", {}),
    ("{{ 'x' % 5 }}", {}),
    # comparisons and logic
    ("{{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' == 'a' }} {{ [1] == [1] }} {{ [1] == (1,) }} {{ {'a': 1} == {'a': 1.0} }} {{ none == none }} {{ 'a' != 'b' }}", {}),
    ("{{ 1 < 2 }} {{ 2 <= 2 }} {{ 3 > 4 }} {{ 'b' >= 'a' }} {{ [1, 2] < [1, 3] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'Z' < 'a' }} {{ 'é' > 'z' }}", {}),
    ("{{ 'x' in 'xyz' }} {{ 'q' not in 'xyz' }} {{ 2 in [1, 2] }} {{ 'a' in {'a': 1} }} {{ 'a' in missing }} {{ '' in 'abc' }} {{ 1.0 in [1] }}", {}),
    ("{{ 1 < 'a' }}", {}),
    ("{{ 1 in 'abc' }}", {}),
    ("{{ 1 in 5 }}", {}),
    ("{{ missing < 1 }}", {}),
    ("{{ true and 'x' }} {{ '' or 'fallback' }} {{ 0 and 1 }} {{ none or none }} {{ [] or [1] }} {{ 'a' and '' }}", {}),
    ("{{ missing or 'default' }} {{ missing and 'x' }}", {}),
    ("{{ 'yes' if t else 'no' }} {{ 'yes' if n else 'no' }} {{ 'a' if false }}|{{ ('a' if false) is defined }}", D),
    ("{{ 1 if true else 2 if true else 3 }} {{ 1 if false else 2 if false else 3 }}", {}),
    # tests
    ("{{ a is defined }}{{ a is undefined }}{{ n is none }}{{ a is none }}{{ a is number }}{{ f is number }}{{ t is number }}", D),
    ("{{ a is integer }}{{ t is integer }}{{ f is float }}{{ a is float }}{{ b is string }}{{ l is string }}{{ t is boolean }}{{ a is boolean }}", D),
    ("{{ l is iterable }}{{ b is iterable }}{{ a is iterable }}{{ missing is iterable }}{{ nested is mapping }}{{ l is mapping }}{{ l is sequence }}{{ b is sequence }}{{ nested is sequence }}", D),
    ("{{ t is true }}{{ t is false }}{{ 1 is true }}{{ false is false }}{{ 0 is false }}", D),
    ("{{ 3 is odd }}{{ 3 is even }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(2) }}{{ 3.0 is odd }}", {}),
    ("{{ 'a' is equalto 'a' }}{{ 2 is eq 2 }}{{ 2 is ne 3 }}{{ 1 is lt 2 }}{{ 2 is le 2 }}{{ 3 is gt 2 }}{{ 3 is ge 4 }}{{ 1 is lessthan 2 }}{{ 3 is greaterthan 2 }}{{ 2 is in [1, 2] }}", {}),
    ("{{ 'abc' is lower }}{{ 'aBc' is lower }}{{ 'ABC' is upper }}{{ '123' is upper }}{{ 'ß' is lower }}", {}),
    ("{{ none is sameas none }}{{ true is sameas true }}{{ 1 is sameas 1 }}{{ l is sameas l }}", D),
    ("{{ 'upper' is filter }}{{ 'nope' is filter }}{{ 'odd' is test }}{{ 'nope' is test }}{{ range is callable }}{{ 1 is callable }}", {}),
    ("{{ a is not defined }}{{ n is not none }}{{ not a is defined }}", D),
    ("{{ 'x' is escaped }}", {}),
    ("{{ 1 is nosuchtest }}", {}),
    ("{{ 'a' is odd }}", {}),
    # if / elif / else
    ("{% if a == 1 %}one{% elif a == 2 %}two{% else %}other{% endif %}", {"a": 1}),
    ("{% if a == 1 %}one{% elif a == 2 %}two{% else %}other{% endif %}", {"a": 2}),
    ("{% if a == 1 %}one{% elif a == 2 %}two{% elif a == 3 %}three{% else %}other{% endif %}", {"a": 3}),
    ("{% if a == 1 %}one{% elif a == 2 %}two{% else %}other{% endif %}", {"a": 9}),
    ("{% if missing %}x{% else %}empty{% endif %}{% if [] %}x{% endif %}{% if {} %}x{% endif %}{% if '' %}x{% endif %}{% if 0.0 %}x{% endif %}{% if ' ' %}space{% endif %}", {}),
    ("{% if 1, 2 %}tuple{% endif %}", {}),
    # for loops
    ("{% for x in l %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }};{% endfor %}", D),
    ("{% for x in l %}[{{ loop.previtem }}|{{ loop.nextitem }}]{% endfor %}", D),
    ("{% for x in [] %}never{% else %}empty{% endfor %}", {}),
    ("{% for x in [1, 2] %}{{ x }}{% break %}{% else %}|else ran{% endfor %}", {}),
    ("{% for x in [1, 2] %}{% if x == 1 %}{% continue %}{% endif %}{{ x }}{% else %}|else ran{% endfor %}", {}),
    ("{% for x in [1, 2] %}{{ x }}{% continue %}{% else %}|else ran{% endfor %}", {}),
    ("{{ [1] in {} }}", {}),
    ("{{ {[1]: 2} }}", {}),
    ("{% for x in missing %}never{% else %}undefined is empty{% endfor %}", {}),
    ("{% for x in l if x is odd %}{{ x }}:{{ loop.index }}/{{ loop.length }}{{ ',' if not loop.last }}{% endfor %}", D),
    ("{% for x in l if x > 5 %}{{ x }}{% else %}none passed{% endfor %}", D),
    ("{% for k, v in nested.x.items() %}{{ k }}={{ v }};{% endfor %}{% for k in {'p': 1, 'q': 2} %}{{ k }}{% endfor %}", D),
    ("{% for a, b in [[1, 2], (3, 4), 'xy'] %}{{ a }}{{ b }}|{% endfor %}", {}),
    ("{% for (a, b), c in [((1, 2), 3)] %}{{ a }}{{ b }}{{ c }}{% endfor %}", {}),
    ("{% for ch in 'héllo' %}{{ ch }}.{% endfor %}", {}),
    ("{% for x in l %}{% for y in 'ab' %}{{ loop.index }}{{ y }}{% endfor %}{{ loop.index }}|{% endfor %}", D),
    ("{% for x in l %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}!", D),
    ("{% for x in [1, 2, 3] %}{% for y in [1, 2, 3] %}{% if y == 2 %}{% break %}{% endif %}{{ x }}{{ y }} {% endfor %}{% endfor %}", {}),
    ("{% for x in 'ab' %}{{ loop.cycle('odd', 'even') }} {% endfor %}", {}),
    ("{% for x in l %}{{ loop.depth }}{{ loop.depth0 }}{% endfor %}", D),
    ("{% for i in range(3) %}{{ i }}{% endfor %} {{ range(2, 10, 3) | list }} {{ range(5, 0, -2) | list }}", {}),
    ("{% for a, b in [[1, 2, 3]] %}{% endfor %}", {}),
    ("{% for x in 42 %}{% endfor %}", {}),
    ("{% for x in none %}{% endfor %}", {}),
    # scoping
    ("{% for i in [1, 2, 3] %}{% set x = (x or 0) + i %}{{ x }},{% endfor %}|{{ x }}", {}),
    ("{% set x = 10 %}{% for i in [1, 2, 3] %}{% set x = x + i %}{{ x }},{% endfor %}|{{ x }}", {}),
    ("{% if true %}{% set y = 5 %}{% endif %}{{ y }}", {}),
    ("{% set x = 'o' %}{% for i in [1, 2] %}{{ x }}{% set x = i %}{{ x }}{% endfor %}{{ x }}", {}),
    ("{% for i in [1, 2] %}{% for j in [3] %}{% set x = j %}{% endfor %}[{{ x }}]{% endfor %}", {}),
    ("{% set messages = messages[1:] %}{{ messages | length }}", {"messages": [1, 2, 3]}),
    ("{% set ns = namespace(total=0, names=[]) %}{% for x in l %}{% set ns.total = ns.total + x %}{% set ns.names = ns.names + [x] %}{% endfor %}{{ ns.total }} {{ ns.names }} {{ ns.missing }}", D),
    ("{% set ns = namespace() %}{% set ns.a = 'set later' %}{{ ns.a }}", {}),
    ("{% set ns = namespace({'k': 1}, j=2) %}{{ ns.k }}{{ ns.j }}", {}),
    ("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c = 3, %}{{ c }}", {}),
    ("{% set x %}captured {{ 1 + 1 }}{% endset %}[{{ x }}]", {}),
    ("{% set x | upper %}shout {{ 'it' }}{% endset %}{{ x }}", {}),
    ("{% with a = 5, b = a %}{{ a }}{{ b }}{% endwith %}{{ a }}", {"a": 1}),
    ("{% set t = 'x' %}{% set t.attr = 1 %}", {}),
    ("{{ s }}{% set s = 7 %}{{ s }}", {"s": "S"}),
    ("{% for x in [1] if s %}Y{% endfor %}{% set s = 7 %}|{% for x in [1] %}{{ s }}{% endfor %}", {"s": "S"}),
    ("{% for x in [1] %}{{ s }}{% endfor %}{% if false %}{% set s = 7 %}{% endif %}", {"s": "S"}),
    ("{% macro m() %}[{{ s }}]{% endmacro %}{{ m() }}{% set s = 7 %}{{ m() }}", {"s": "S"}),
    ("{% for i in [1, 2] %}{% for j in [1] %}[{{ y }}]{% endfor %}{% set y = i %}{% endfor %}", {"y": "Y"}),
    ("{% for i in [1, 2] %}[{{ y }}]{% set y = i %}{% endfor %}", {"y": "Y"}),
    ("{% for i in [1, 2] %}{% macro m() %}{{ y }}{% endmacro %}[{{ m() }}]{% set y = i %}{% endfor %}", {"y": "Y"}),
    ("{% if c %}{% set s = 1 %}{% elif d %}{% set s = 2 %}{% else %}{% set s = 3 %}{% endif %}{% for x in [1] %}{{ s }}{% endfor %}", {"s": "S", "c": False, "d": True}),
    ("{% for x in [1] %}{{ s }}{% endfor %}{% if c %}{% set s = 1 %}{% elif d %}{% set s = 2 %}{% else %}{% set s = 3 %}{% endif %}", {"s": "S", "c": False, "d": True}),
    ("{% for x in [1] %}{{ s }}{% endfor %}{% if c %}{% set s = 1 %}{% else %}{% set s = 3 %}{% endif %}", {"s": "S", "c": False}),
    ("{% for x in [1] %}{% set y = 1 %}{% else %}{% set z = 2 %}{% endfor %}{{ y }}{{ z }}", {"y": "Y", "z": "Z"}),
    ("{% for x in [] %}{% else %}{% set z = 2 %}{{ z }}{% endfor %}[{{ z }}]", {"z": "Z"}),
    ("{% set x %}{% set inner = 5 %}{% endset %}[{{ inner }}]{% filter upper %}{% set inner = 6 %}{% endfilter %}[{{ inner }}]", {"inner": "I"}),
    ("{% with q = 1 %}{% for i in [1] %}{{ r }}{% endfor %}{% set r = 2 %}{% endwith %}|{{ r }}", {"r": "R"}),
    ("{% set ns = namespace(a=1) %}{% for i in [1] %}{% set ns.a = 2 %}{% endfor %}{{ ns.a }}", {}),
    ("{% macro m(a, b=a) %}{% set a = 9 %}{{ a }}{{ b }}{% endmacro %}{{ m(1) }}", {}),
    # macros and call blocks
    ("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', '?') }} {{ greet(punct='.', name='Cy') }}", {}),
    ("{% macro m(a, b=a ~ 'x') %}{{ a }}{{ b }}{% endmacro %}{{ m('q') }}", {}),
    ("{% macro m(a) %}[{{ a }}]{% endmacro %}{{ m() }}", {}),
    ("{% macro m() %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, k='v') }}", {}),
    ("{% macro m() %}{{ z }}{% endmacro %}{% set z = 7 %}{{ m() }}", {}),
    ("{% set z = 1 %}{% macro m() %}{{ z }}{% endmacro %}{% set z = 7 %}{{ m() }}", {}),
    ("{% macro outer() %}<{{ caller() }}>{% endmacro %}{% call outer() %}inside {{ 1 }}{% endcall %}", {}),
    ("{% macro list_items(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(x) list_items([1, 2]) %}[{{ x }}]{% endcall %}", {}),
    ("{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * (fact(n - 1) | int) }}{% endif %}{% endmacro %}{{ fact(5) }}", {}),
    ("{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}", {}),
    ("{% macro m(a) %}{{ a }}{% endmacro %}{{ m(b=1) }}", {}),
    ("{% filter upper %}quiet {{ 'words' }}{% endfilter %}", {}),
    ("{% print 'printed' %}", {}),
    ("{% generation %}gen {{ 1 }}{% endgeneration %}|{% for x in [1] %}{% generation %}{{ x }}{% endgeneration %}{% endfor %}", {}),
    ("{% generation %}{% set inner = 1 %}{% endgeneration %}{{ inner }}", {}),
    # filters
    ("{{ 'hello'|length }} {{ l|length }} {{ nested|length }} {{ missing|length }} {{ u|count }} {{ ''|length }}", D),
    ("{{ s|upper }} {{ s|lower }} {{ 'hello wOrld-foo(bar [baz <qux'|title }} {{ 'aBC dEF'|capitalize }} {{ u|upper }} {{ u|lower }} {{ u|title }} {{ u|capitalize }}", D),
    ("{{ 'ß ﬁ ŉ'|upper }} {{ 'ΣΑΣ ΟΔΟΣ'|lower }} {{ 'İ'|lower|length }} {{ 'ǆemal'|capitalize }}", {}),
    ("[{{ '  x y  '|trim }}][{{ '\\n\\tx\\u3000'|trim }}][{{ 'xxhixx'|trim('x') }}][{{ 5|trim }}][{{ missing|trim }}]", {}),
    ("{{ 'aaa'|replace('a', 'b') }} {{ 'aaa'|replace('a', 'b', 2) }} {{ 'abc'|replace('', '-') }} {{ 'abc'|replace('', '-', 2) }} {{ 1|replace(1, 2) }}", {}),
    ("{{ l|join }} {{ l|join(', ') }} {{ ['a', 1, none]|join('-') }} {{ msgs|join('|', attribute='role') }} {{ 'abc'|join('.') }}", D),
    ("{{ l|first }} {{ l|last }} {{ 'abc'|first }} {{ 'abc'|last }} [{{ []|first }}] [{{ []|last }}]", D),
    ("{{ 'abc'|list }} {{ nested|list }} {{ l|list }} {{ (1, 2)|list }} {{ missing|list }}", D),
    ("{{ missing|default('dflt') }} {{ none|default('dflt') }} {{ ''|default('dflt') }} {{ ''|default('dflt', true) }} {{ 0|d('zero', boolean=true) }} [{{ missing|default }}]", {}),
    ("{{ nested|tojson }}|{{ D|tojson }}", {"D": D, "nested": D["nested"]}),
    ("{{ {'b': 1, 'a': [1, 2.5, none, true, 'é\"\\n\\t\\u0001\\u2028']}|tojson }}", {}),
    ("{{ {'a': [1, {'c': []}], 'd': {}}|tojson(indent=2) }}|{{ [1, [2]]|tojson(indent='--') }}|{{ [1]|tojson(indent=0) }}", {}),
    ("{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }} {{ [1, 2]|tojson(separators=(',', ':')) }} {{ {'k': 'é'}|tojson(ensure_ascii=true) }} {{ '😀'|tojson(ensure_ascii=true) }}", {}),
    ("{{ 1e100|tojson }} {{ (1/3)|tojson }} {{ 1.0|tojson }} {{ 'str'|tojson }} {{ none|tojson }} {{ {1: 'int key', none: 1, true: 2, 1.5: 3}|tojson }}", {}),
    ("{{ missing|tojson }}", {}),
    ("{{ (1, 2)|tojson }} {{ [(1, 'a')]|tojson }}", {}),
    ("{{ d|items|list }} {{ missing|items|list }}", {"d": {"x": 1, "y": [2]}}),
    ("{{ {'b': 1, 'A': 2, 'a': 3}|dictsort }} {{ {'b': 1, 'A': 2, 'a': 3}|dictsort(true) }} {{ {'x': 2, 'y': 1}|dictsort(by='value') }} {{ {'x': 2, 'y': 1}|dictsort(reverse=true) }}", {}),
    ("{{ [3, 1, 2]|sort }} {{ ['b', 'A', 'a', 'B']|sort }} {{ ['b', 'A', 'a']|sort(case_sensitive=true) }} {{ [3, 1, 2]|sort(reverse=true) }} {{ msgs|sort(attribute='role')|map(attribute='content')|list }}", D),
    ("{{ [{'k': 2, 'i': 'a'}, {'k': 1, 'i': 'b'}, {'k': 2, 'i': 'c'}, {'k': 1, 'i': 'd'}]|sort(attribute='k', reverse=true)|map(attribute='i')|join }}", {}),
    ("{{ ['b', 'A', 'a', 'B', 'b']|unique|list }} {{ ['b', 'A', 'a']|unique(case_sensitive=true)|list }} {{ [1, 1.0, true, 2]|unique|list }} {{ msgs|unique(attribute='role')|list|length }}", D),
    ("{{ l|reverse|list }} {{ 'héllo'|reverse }} {{ nested.x|reverse|list }}", D),
    ("{{ l|sum }} {{ [1.5, 2]|sum }} {{ l|sum(start=10) }} {{ [{'v': 1}, {'v': 2}]|sum(attribute='v') }} {{ []|sum }}", D),
    ("{{ l|max }} {{ l|min }} {{ ['b', 'A', 'c']|max }} {{ ['b', 'A', 'c']|min }} {{ ['b', 'A', 'c']|max(case_sensitive=true) }} [{{ []|max }}] {{ [{'v': 3}, {'v': 9}]|max(attribute='v') }}", D),
    ("{{ parts|selectattr('type', 'equalto', 'text')|map(attribute='text')|join(',') }} {{ parts|rejectattr('type', 'equalto', 'text')|list|length }} {{ parts|selectattr('text')|list|length }} {{ parts|selectattr('text', 'defined')|list|length }} {{ parts|rejectattr('image_url', 'undefined')|list }}", D),
    ("{{ parts|map(attribute='type')|list }} {{ parts|map(attribute='text', default='-')|join }} {{ parts|map(attribute='image_url.url')|list }}", D),
    ("{{ ['a', 'b']|map('upper')|join }} {{ [1.6, 2.4]|map('round')|list }} {{ ['x', 'y']|map('replace', 'x', 'z')|join }}", {}),
    ("{{ [1, 2, 3, 4]|select('odd')|list }} {{ [1, 2, 3, 4]|reject('even')|list }} {{ [1, 'a', 2, none]|select('number')|list }} {{ [0, 1, '', 'x']|select|list }} {{ [1, 5, 9]|select('gt', 4)|list }}", {}),
    ("{{ '3'|int + 1 }} {{ '3.7'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 3.9|int }} {{ -3.9|int }} {{ true|int }} {{ ' 42 '|int }} {{ '1_000'|int }} {{ '0x1f'|int(0, 16) }} {{ 'ff'|int(base=16) }}", {}),
    ("{{ '3.5'|float }} {{ 3|float }} {{ '1e3'|float }} {{ 'x'|float }} {{ 'x'|float(1.5) }} {{ ' -2.5 '|float }} {{ none|float }}", {}),
    ("{{ -3|abs }} {{ -2.5|abs }} {{ 2.5|round }} {{ 3.5|round }} {{ 0.125|round(2) }} {{ 2.675|round(2) }} {{ 7|round }} {{ 1.25|round(1, 'floor') }} {{ 1.21|round(1, 'ceil') }} {{ -0.5|round }}", {}),
    ("{{ 123|string }} {{ none|string }} {{ l|string|length }} {{ 1.0|string }}", D),
    ("{{ '<a href=\"x\">&\\''|e }} {{ '<b>'|escape }} {{ '<i>'|safe }} {{ none|e }} {{ 5|e }}", {}),
    ("[{{ 'a\\nb\\n\\nc'|indent(2) }}][{{ 'a\\nb'|indent(2, true) }}][{{ 'x\\n\\ny'|indent(2, blank=true) }}][{{ 'p\\nq'|indent('>> ') }}][{{ 'one'|indent }}][{{ ''|indent(first=true) }}]", {}),
    ("{{ 'a b  c\\td_e f-g'|wordcount }} {{ ''|wordcount }} {{ 'héllo wörld'|wordcount }}", {}),
    ("{{ l|batch(2)|list }} {{ l|batch(2, 0)|list }} {{ []|batch(3)|list }}", D),
    ("{{ msgs[0]|attr('role') }} [{{ msgs[0]|attr('nope') }}]", D),
    ("{{ 'a'|upper|lower|capitalize }}{{ l|map('string')|join('+') }}", D),
    ("{{ x|nosuchfilter }}", {}),
    ("{% if false %}{{ x|nosuch }}{% endif %}ok", {}),
    ("{% if true %}{{ x|nosuch }}{% endif %}", {}),
    ("{{ x|nosuch if false else 'c' }}{{ 'd' if true else x|nosuch }}", {}),
    ("{% for i in [1] %}{% if false %}{{ i|nosuch }}{% endif %}{% endfor %}ok", {}),
    ("{% if false %}{% for i in [1] %}{{ i|nosuch }}{% endfor %}{% endif %}", {}),
    ("{% if 1 is nosuchtest %}{% endif %}", {}),
    ("{{ 0|map(attribute='x')|list }}{{ none|select('nosuchtest')|list }}{{ ''|selectattr('a')|list }}", {}),
    ("{{ 5|indent }}", {}),
    ("{{ a[1:] }}", {"a": 5}),
    ("{{ d[1:] }}", {"d": {"a": 1}}),
    ("{{ missing[1:] }}", {}),
    ("{{ 5|length }}", {}),
    ("{{ 'a'|items|list }}", {}),
    ("{{ [1, 'a']|sort }}", {}),
    ("{{ 1|join }}", {}),
    # methods
    ("[{{ '  x  '.strip() }}][{{ '  x  '.lstrip() }}][{{ '  x  '.rstrip() }}][{{ 'xxhixx'.strip('x') }}][{{ '\\nhi\\n'.strip('\\n') }}]", {}),
    ("{{ '  a b  '.split() }}{{ 'a,b,,c'.split(',') }}{{ 'a b c'.split(' ', 1) }}{{ ''.split() }}{{ ''.split(',') }}{{ ' a  b  c '.split(none, 1) }}{{ 'a b c'.rsplit(' ', 1) }}{{ ' a b c '.rsplit(none, 1) }}", {}),
    ("{{ 'a\\nb\\r\\nc\\rd'.splitlines() }}{{ 'abc'.startswith('ab') }}{{ 'abc'.startswith(('x', 'a')) }}{{ 'abc'.endswith('bc') }}{{ 'abc'.endswith('x') }}", {}),
    ("{{ 'Hello'.upper() }}{{ 'Hello'.lower() }}{{ 'hello world'.title() }}{{ \"they're bill's\".title() }}{{ 'hELLO'.capitalize() }}", {}),
    ("{{ 'aaa'.replace('a', 'b') }}{{ 'aaa'.replace('a', 'b', 1) }}{{ 'héllo'.find('l') }}{{ 'hello'.rfind('l') }}{{ 'hello'.find('z') }}{{ 'banana'.count('an') }}{{ '-'.join(['a', 'b']) }}", {}),
    ("{{ '123'.isdigit() }}{{ '12a'.isdigit() }}{{ 'abc'.isalpha() }}{{ 'ab1'.isalnum() }}{{ ' \\t'.isspace() }}{{ 'abc'.islower() }}{{ 'ABC'.isupper() }}{{ ''.isdigit() }}", {}),
    ("{{ '{} and {}'.format('a', 1) }} {{ '{1}{0}'.format('x', 'y') }} {{ '{name}!'.format(name='Ann') }} {{ '{{literal}}'.format() }}", {}),
    ("{{ nested.get('x') }} {{ nested.get('nope') }} {{ nested.get('nope', 'fallback') }} {{ nested.keys()|list }} {{ nested.x.values()|list|length }} {{ nested.items()|list }}", D),
    ("{{ l.index(2) }} {{ l.count(2) }}", D),
    ("{% set f = s.upper %}{{ f() }}", D),
    ("{{ l.append(4) }}", D),
    ("{{ nested.update({}) }}", D),
    ("{{ nested.pop('x') }}", D),
    ("{{ 'a b'.split('') }}", {}),
    # globals
    ("{{ raise_exception('Custom failure: ' ~ 2) }}", {}),
    ("{% if true %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}", {}),
    ("{{ strftime_now('%Y-%m-%d')|length }} {{ strftime_now('%Y') is string }}", {}),
    ("{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%dT%H:%M:%S') }}|{{ strftime_now('%A %B %j %p %I %y %%') }}|{{ strftime_now('') }}", {}),
    ("{{ dict(a=1, b='x') }} {{ dict({'z': 0}, y=1) }} {{ dict() }}", {}),
    ("{{ range(3)|list }} {{ range(0)|list }} {{ range(-2)|list }}", {}),
    ("{{ range(100001)|length }}", {}),
    ("{{ namespace(a=1).a }} {{ namespace(a=1).b }}|{{ namespace(x=2) }}", {}),
    ("{{ foo() }}", {}),
    ("{{ 'str'() }}", {}),
    # syntax errors
    ("{% if true %}unclosed", {}),
    ("{% for x in l %}{% endif %}", {}),
    ("line1\n{% endfor %}", {}),
    ("{{ 1 + }}", {}),
    ("{{ 'unterminated }}", {}),
    ("{% nosuchtag %}", {}),
    ("{{ (1 + 2 }}", {}),
    ("{{ [1, 2) }}", {}),
    ("{% break %}", {}),
    ("{% set 1 = 2 %}", {}),
    ("{# unclosed comment", {}),
    ("{% raw %}unclosed raw", {}),
    ("{% macro m(a=1, b) %}{% endmacro %}", {}),
    ("{{ }}", {}),
    ("{% extends 'base.html' %}", {}),
    ("{{ 1 is }}", {}),
    ("{{ x | }}", {}),
]


def render_case(env, src, ctx):
    """("expected", text) or ("error", (kind, type name, message))."""
    try:
        tmpl = env.from_string(src)
    except Exception as e:  # TemplateSyntaxError, or Python's for {% break %}
        return "error", ("syntax", type(e).__name__, getattr(e, "message", None) or str(e))
    try:
        # a copy: some filters mutate their input in Python (indent on a
        # list appends to it), and the context is written out afterwards
        return "expected", tmpl.render(**copy.deepcopy(ctx))
    except Exception as e:  # what transformers would propagate
        return "error", ("render", type(e).__name__, str(e))


def add_result(case, kind, result):
    if kind == "expected":
        case["expected"] = result
    else:
        case["error"] = {"phase": result[0], "type": result[1], "message": result[2]}


def main():
    env = make_env()
    cases = []
    for name, path in TEMPLATES.items():
        with open(path, encoding="utf-8") as f:
            src = f.read()
        for conv_name, messages, extra in CONVERSATIONS:
            ctx = dict(BASE_CONTEXT)
            ctx["messages"] = messages
            ctx.update(extra)
            case = {"name": "%s/%s" % (name, conv_name), "template_file": path,
                    "context": ctx}
            add_result(case, *render_case(env, src, ctx))
            cases.append(case)
    for i, (src, ctx) in enumerate(UNIT):
        case = {"name": "unit/%03d" % i, "template": src, "context": ctx}
        add_result(case, *render_case(env, src, ctx))
        cases.append(case)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"generator": "tests/chat_ref.py", "jinja2": jinja2.__version__,
                   "now": NOW, "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n_err = sum(1 for c in cases if "error" in c)
    print("%s: %d cases (%d errors) with Jinja2 %s" % (OUT, len(cases), n_err,
                                                       jinja2.__version__))


if __name__ == "__main__":
    if not os.path.isdir("conf"):
        sys.exit("run from the repository root")
    main()

// Small templates that each exercise a few constructs of the Jinja subset ChatTemplate implements.
// String.raw keeps backslashes, so "\n" below is a Jinja escape, not a newline in the source.
const msgs = [
  { role: "system", content: "Be terse." },
  { role: "user", content: "Hi there" },
  { role: "assistant", content: "Hello." },
  { role: "user", content: "Bye" },

  // Constructs @huggingface/jinja 0.5.11 lacks or renders unlike Python (these cases take Python Jinja2 as reference).
  {
    name: "python-only-literals-and-operators",
    template: String.raw`{{ 1_000 }}|{{ 'ab' * 3 }}|{{ 3 * 'x' }}|{% if 1 < 2 < 3 %}chain{% endif %}|{% if not 1 < 3 < 2 %}broken-chain{% endif %}|{% if 'b' > 'a' and 'ab' < 'b' %}str-order{% endif %}|{{ 'abc' | first }}{{ 'abc' | last }}|{% if [1, 2] == [1, 2] %}list-eq{% endif %}|{% if (1, 2) != [1, 2] %}tuple-ne-list{% endif %}|{{ 2.5e-5 }}|{{ 1e3 }}`,
  },
  {
    name: "python-only-loops",
    variables: { items: ["a", "b", "c"] },
    template: String.raw`{% for x in items %}{{ loop.cycle('o', 'e') }}{% endfor %}|{% for x in missing %}x{% else %}undefined-is-empty{% endfor %}|{% for c in 'héllo' %}{{ c }}.{% endfor %}`,
  },
  {
    name: "python-only-filters",
    variables: { items: ["b", "a", "c"], nums: [3, 1, 2], users: [{ name: "Bo", age: 30 }, { name: "al", age: 25 }] },
    template: String.raw`{{ 'xxhixx' | trim('x') }}|{{ 'abc' | reverse }}|{{ nums | sum }}|{{ nums | max }}|{{ nums | min }}|{{ items | count }}|{{ missing | d('short') }}|{{ [0, 1, 2, 3] | select('odd') | join }}|{{ [0, 1, '', 'a'] | select | list | length }}|{{ [1, 2, 3] | reject('equalto', 2) | join }}|{{ ['a', 'b'] | map('upper') | join }}|{{ 2.567 | round(2) }}|{{ 2.5 | round }}|{{ users | sort(attribute='name') | map(attribute='name') | join(',') }}|{{ users | sum(attribute='age') }}|{{ users | max(attribute='age') | attr('name') }}|{{ {'b': 1, 'a': 2} | dictsort | first | first }}|{{ users | map(attribute='missing', default='-') | join }}`,
  },
  {
    name: "python-only-tests",
    variables: { x: 1 },
    template: String.raw`{% if 6 is divisibleby(3) %}a{% endif %}{% if 7 is divisibleby 3 %}X{% endif %}{% if 'a' is in ['a'] %}b{% endif %}{% if 1.5 is float %}c{% endif %}{% if x is eq 1 %}d{% endif %}{% if x is sameas 1 %}e{% endif %}{% if none is sameas none %}f{% endif %}{% if x is not string %}g{% endif %}{% if x is ge 1 %}h{% endif %}{% if 'x' is callable %}X{% endif %}{% if range is callable %}i{% endif %}`,
  },
  {
    name: "python-only-string-methods",
    template: String.raw`{{ 'xxhixx'.strip('x') }}|{{ ', '.join(['p', 'q']) }}|{{ 'banana'.count('an') }}|{{ 'banana'.find('n') }}|{{ 'a b c'.rsplit(' ', 1) | join('|') }}|{{ 'l1\nl2\r\nl3'.splitlines() | join(',') }}|{{ 'pre-x'.removeprefix('pre-') }}|{{ 'x.txt'.removesuffix('.txt') }}|{{ '42'.isdigit() }}|{{ 'ab'.replace('', '-') }}|{{ 'hello world'.split('o') | length }}`,
  },
  {
    name: "python-only-whitespace-plus",
    template: "a\n  {%+ if true %}plus keeps indent{% endif %}\n{% if true +%}\nnewline kept\n{% endif %}\n  {#+ c +#}\nend",
  },
  {
    name: "python-only-printing-containers",
    variables: { d: { q: "it's", n: null, t: [1, [2, 'x']] } },
    template: String.raw`{{ d }}|{{ d.items() | list }}|{{ ('one',) }}|{{ 'a"b' ~ [("'")] }}|{{ -0.0 }}|{{ 1e300 * 10 }}|{{ 3.0 // 2 }}|{{ -7.5 % 2 }}`,
  },
];

export const SYNTHETIC = [
  {
    name: "literals-and-escapes",
    template: String.raw`{{ 'a\'b' }}|{{ "q\"x" }}|{{ 'tab\tnl\n' }}|{{ 42 }}|{{ 3.5 }}|{{ -7 }}|{{ [10, 20][1] }}|{{ {'k': 'v'}['k'] }}|{{ 'ab' 'cd' }}|{{ '\u00e9\x41' }}|{{ "back\\slash" }}`,
  },
  {
    name: "python-printing",
    template: String.raw`{{ true }} {{ false }} {{ none }} {{ True }} {{ None }} {{ [1, 'a', none, true] }} {{ {'k': 'v', 'n': 1.0} }} {{ 1.0 }} {{ 7 / 2 }} {{ 0.1 + 0.2 }} {{ (1, 2) }} {{ ["it's"] }} {{ 2.5e-5 }} {{ 1e16 }} {{ 12345678.9 }}`,
  },
  {
    name: "arithmetic",
    template: String.raw`{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 'a' + 'b' }} {{ 10 - 2 - 3 }} {{ 6 / 4 }} {{ -(3) }} {{ 2 * 1.5 }}`,
  },
  {
    name: "concat-tilde",
    template: String.raw`{{ 'n=' ~ 5 ~ '|' ~ missing ~ '|' ~ 'x' }}{{ 'a' ~ (1 + 2) }}{{ 2 * 3 ~ 'b' }}`,
  },
  {
    name: "comparisons-and-logic",
    template: String.raw`{% if 1 < 2 %}a{% endif %}{% if 2 > 1 %}b{% endif %}{% if 1 == 1.0 %}c{% endif %}{% if 'x' in 'xyz' %}d{% endif %}{% if 'q' not in ['a'] %}e{% endif %}{% if 'k' in {'k': 1} %}f{% endif %}{% if not false and (true or false) %}g{% endif %}{% if 2 != 3 %}h{% endif %}{% if not 1 > 2 %}i{% endif %}{% if 'a' == 'a' %}j{% endif %}{% if 3 >= 3 and 2 <= 2 %}k{% endif %}{% if '' or 0 or [] %}X{% else %}l{% endif %}{{ 0 or 'dflt' }}{{ 'first' and 'second' }}`,
  },
  {
    name: "conditional-expression",
    variables: { flag: true },
    template: String.raw`{{ 'yes' if flag else 'no' }}|{{ 'x' if false }}|{{ 'a' if false else 'b' if true else 'c' }}|{{ ('p' if flag else 'q') ~ '!' }}`,
  },
  {
    name: "if-elif-else",
    variables: { n: 2 },
    template: String.raw`{% for v in [0, 1, 2, 3] %}{% if v == 0 %}zero{% elif v == 1 %}one{% elif v == n %}n{% else %}many{% endif %},{% endfor %}`,
  },
  {
    name: "loop-variables",
    variables: { items: ["a", "b", "c"] },
    template: String.raw`{% for x in items %}{{ loop.index0 }}{{ loop.index }}{{ loop.revindex }}{{ loop.revindex0 }}{{ 'F' if loop.first }}{{ 'L' if loop.last }}{{ loop.length }}:{{ x }};{% endfor %}`,
  },
  {
    name: "loop-prev-next-cycle",
    variables: { items: ["a", "b", "c"] },
    template: String.raw`{% for x in items %}{{ loop.previtem | default('^') }}{{ x }}{{ loop.nextitem | default('$') }} {% endfor %}`,
  },
  {
    name: "loop-filter-and-else",
    variables: { items: ["a", "b", "c"] },
    template: String.raw`{% for x in items if x != 'b' %}{{ loop.index }}{{ x }}{{ loop.length }} {% else %}empty{% endfor %}|{% for x in [] %}x{% else %}none{% endfor %}`,
  },
  {
    name: "loop-unpacking-and-dicts",
    variables: { d: { b: 1, a: 2, c: 3 } },
    template: String.raw`{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}|{% for k, v in d | items %}{{ k }}:{{ v }};{% endfor %}|{% for k in d %}{{ k }}{% endfor %}|{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}|{{ d.keys() | join(',') }}|{{ d.values() | join(',') }}`,
  },
  {
    name: "nested-loops",
    template: String.raw`{% for i in [1, 2] %}{% for j in ['x', 'y'] %}{{ i }}{{ j }}{{ loop.index }}{% endfor %}/{{ loop.index }} {% endfor %}`,
  },
  {
    name: "set-scoping",
    template: String.raw`{% set x = 0 %}{% for i in [1, 2, 3] %}{% set x = x + i %}{{ x }}{% endfor %}|{{ x }}|{% if true %}{% set y = 5 %}{% endif %}{{ y }}`,
  },
  {
    name: "namespace",
    template: String.raw`{% set ns = namespace(total=0, found=false, names='') %}{% for i in [1, 2, 3] %}{% set ns.total = ns.total + i %}{% if i == 2 %}{% set ns.found = true %}{% endif %}{% set ns.names = ns.names ~ i %}{% endfor %}{{ ns.total }} {{ 'found' if ns.found }} {{ ns.names }}`,
  },
  {
    name: "set-block",
    variables: { name: "Ada" },
    template: String.raw`{% set greeting %}Hello {{ name }}!{% endset %}{{ greeting | upper }}|{{ greeting | length }}`,
  },
  {
    name: "macro",
    template: String.raw`{% macro tag(name, value='v') %}<{{ name }}={{ value }}>{% endmacro %}{{ tag('a') }}{{ tag('b', 'x') }}{{ tag(name='c', value=1) }}{{ tag('d') | upper }}`,
  },
  {
    name: "break-continue-range",
    template: String.raw`{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}|{% for i in range(1, 10, 3) %}{{ i }}{% endfor %}|{% for i in range(5, 0, -2) %}{{ i }}{% endfor %}|{{ range(3) | list | length }}`,
  },
  {
    name: "string-filters",
    template: String.raw`{{ '  hi  ' | trim }}|{{ 'abc' | upper }}|{{ 'ABC' | lower }}|{{ 'hello big-world' | title }}|{{ 'hELLO wORLD' | capitalize }}|{{ 'aXbXc' | replace('X', '-') }}|{{ 'aXbXc' | replace('X', '-', 1) }}|{{ 5 | string }}|{{ 'abc' | length }}|{{ 'héllo' | length }}`,
  },
  {
    name: "list-filters",
    variables: { items: ["b", "a", "c"], nums: [3, 1, 2] },
    template: String.raw`{{ items | length }}|{{ items | join(', ') }}|{{ items | join }}|{{ items | first }}|{{ items | last }}|{{ items | reverse | join }}|{{ items | sort | join(',') }}|{{ nums | sort(reverse=true) | join(',') }}|{{ [1, 2, 2, 3, 1] | unique | join }}|{{ nums | list | length }}`,
  },
  {
    name: "default-filter",
    variables: { empty: "", zero: 0, nothing: null },
    template: String.raw`{{ missing | default('dflt') }}|{{ empty | default('empty', true) }}|{{ empty | default('kept') }}|{{ zero | default(7, boolean=true) }}|{{ nothing | default('n', true) }}`,
  },
  {
    name: "default-keeps-none",
    variables: { nothing: null },
    template: String.raw`[{{ nothing | default('n') }}]`,
  },
  {
    name: "select-reject-map",
    variables: { messages: msgs },
    template: String.raw`{% for m in messages | selectattr('role', 'equalto', 'user') %}{{ m.content }};{% endfor %}|{% for m in messages | rejectattr('role', 'eq', 'user') %}{{ m.role }};{% endfor %}|{{ messages | map(attribute='role') | join(',') }}|{{ messages | selectattr('role', 'equalto', 'system') | list | length }}`,
  },
  {
    name: "tojson",
    variables: { data: { name: "get_weather", args: { city: "Paris", days: [1, 2] }, ok: true, none: null, ratio: 0.5, text: 'é "q" \\ \n\t' } },
    template: String.raw`{{ data | tojson }}|{{ data | tojson(indent=2) }}|{{ 'é"\n' | tojson }}|{{ [1, 2.5, none, true, 'x'] | tojson }}|{{ {} | tojson }}|{{ [] | tojson }}|{{ 7 | tojson }}|{{ data.args | tojson(indent=4) }}`,
  },
  {
    name: "tests",
    variables: { x: 1, s: "str", l: [1], d: { a: 1 }, nothing: null },
    template: String.raw`{% if x is defined %}a{% endif %}{% if y is undefined %}b{% endif %}{% if nothing is none %}c{% endif %}{% if s is string %}d{% endif %}{% if d is mapping %}e{% endif %}{% if l is iterable %}f{% endif %}{% if s is iterable %}g{% endif %}{% if 3 is odd %}h{% endif %}{% if 4 is even %}i{% endif %}{% if x is not none %}k{% endif %}{% if x is number %}l{% endif %}{% if false is false %}m{% endif %}{% if true is true %}n{% endif %}{% if l is sequence %}p{% endif %}{% if s is not mapping %}q{% endif %}{% if x is integer %}r{% endif %}{% if true is boolean %}t{% endif %}{% if 'abc' is lower %}u{% endif %}{% if 'ABC' is upper %}v{% endif %}{% if not y is defined %}z{% endif %}`,
  },
  {
    name: "slicing",
    variables: { items: ["a", "b", "c", "d"] },
    template: String.raw`{{ 'abcdef'[::-1] }}|{{ 'abcdef'[1:] }}|{{ 'abcdef'[:2] }}|{{ 'abcdef'[1:5:2] }}|{{ items[1:] | join(',') }}|{{ items[::-1] | join(',') }}|{{ items[-1] }}|{{ 'abcdef'[-2:] }}|{{ items[1:-1] | join }}|{{ items[::2] | join }}|{{ items[10:] | length }}|{{ 'abc'[1] }}|{{ items[-2] }}`,
  },
  {
    name: "string-methods",
    variables: { d: { k: "v" } },
    template: String.raw`{{ '  x  '.strip() }}|{{ '\n\nhi'.lstrip() }}|{{ 'hi\n\n'.rstrip('\n') }}|{% if 'abc'.startswith('ab') %}sw{% endif %}|{% if 'abc'.endswith('bc') %}ew{% endif %}|{% if 'abc'.startswith(('x', 'a')) %}tuple{% endif %}|{{ 'a,b,c'.split(',') | join('|') }}|{{ ' a b  c '.split() | join('|') }}|{{ 'x</think>y</think>z'.split('</think>')[-1] }}|{{ 'a,b,c'.split(',', 1) | join('|') }}|{{ d.get('k') }}|{{ d.get('missing', 'dflt') }}|{{ 'Hello'.upper() }}{{ 'Hello'.lower() }}|{{ 'a-b-c'.replace('-', '+') }}|{{ 'hello world'.title() }}|{{ 'hello'.capitalize() }}`,
  },
  {
    name: "whitespace-control",
    template: "Start\n  {% if true %}\n    inside\n  {% endif %}\n  {#- a comment -#}\n  after\n{%- for i in [1, 2] %}\n  [{{ i }}]\n{%- endfor %}\n{{- '  end  ' -}}\n   tail {# inline comment #} done\n",
  },
  {
    name: "trim-and-lstrip-blocks",
    variables: { items: ["a", "b"] },
    template: "<ul>\n    {% for x in items %}\n    <li>{{ x }}</li>\n    {% endfor %}\n</ul>\n{% if true %}    kept indent{% endif %}\n  {{ 'expr lines keep indent' }}",
  },
  {
    name: "dict-literals-and-access",
    template: String.raw`{% set d = {'a': {'b': [1, 2]}, 'c': 'x'} %}{{ d.a.b[1] }}{{ d['a']['b'][0] }}{{ {'x': {'y': 1}}['x']['y'] }}{{ d.c }}{{ d['missing'] | default('-') }}{{ d.missing is defined }}`,
  },
  {
    name: "generation-block",
    variables: { messages: msgs },
    template: String.raw`{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}[{{ m.content }}]{% endgeneration %}{% else %}{{ m.content }}{% endif %}{% endfor %}`,
  },
  {
    name: "reverse-scan-namespace",
    variables: { messages: msgs },
    template: String.raw`{% set ns = namespace(last_user=-1) %}{% for m in messages[::-1] %}{% set index = (messages | length - 1) - loop.index0 %}{% if ns.last_user == -1 and m.role == 'user' %}{% set ns.last_user = index %}{% endif %}{% endfor %}{{ ns.last_user }}|{{ messages[ns.last_user].content }}`,
  },
  {
    name: "content-type-tests",
    variables: { messages: [{ role: "user", content: "s" }, { role: "user", content: [{ type: "text", text: "t" }] }, { role: "user", content: null }] },
    template: String.raw`{% for m in messages %}{% if m.content is string %}S{% elif m.content is iterable %}L{% elif m.content is none %}N{% endif %}{% endfor %}`,
  },
  {
    name: "number-filters",
    template: String.raw`{{ '42' | int + 1 }}|{{ '3.5' | float }}|{{ 'x' | int }}|{{ 3.7 | int }}|{{ -3 | abs }}|{{ 7 | float }}|{{ 'x' | float(1.5) }}`,
  },
  {
    name: "indent-filter",
    template: String.raw`{{ 'a\nb\n\nc' | indent(2) }}|{{ 'a\nb' | indent(2, true) }}|{{ 'a\n\nb' | indent(3, blank=true) }}`,
  },
  {
    name: "raise-exception",
    variables: { messages: [] },
    template: String.raw`{% if messages | length == 0 %}{{ raise_exception('At least one message is required.') }}{% endif %}ok`,
  },
  {
    name: "undefined-attribute-of-dict",
    variables: { m: { role: "user" } },
    template: String.raw`[{{ m.content }}][{{ m['content'] }}]{% if m.content %}X{% endif %}{% if not m.tool_calls %}no-tools{% endif %}`,
  },
  {
    name: "empty-template",
    template: "",
  },
  {
    name: "trailing-newline-dropped",
    template: "line\n",
  },
  {
    name: "only-text-with-braces",
    template: "a { b } c }} d %} e #}",
  },

  // Constructs @huggingface/jinja 0.5.11 lacks or renders unlike Python (these cases take Python Jinja2 as reference).
  {
    name: "python-only-literals-and-operators",
    template: String.raw`{{ 1_000 }}|{{ 'ab' * 3 }}|{{ 3 * 'x' }}|{% if 1 < 2 < 3 %}chain{% endif %}|{% if not 1 < 3 < 2 %}broken-chain{% endif %}|{% if 'b' > 'a' and 'ab' < 'b' %}str-order{% endif %}|{{ 'abc' | first }}{{ 'abc' | last }}|{% if [1, 2] == [1, 2] %}list-eq{% endif %}|{% if (1, 2) != [1, 2] %}tuple-ne-list{% endif %}|{{ 2.5e-5 }}|{{ 1e3 }}`,
  },
  {
    name: "python-only-loops",
    variables: { items: ["a", "b", "c"] },
    template: String.raw`{% for x in items %}{{ loop.cycle('o', 'e') }}{% endfor %}|{% for x in missing %}x{% else %}undefined-is-empty{% endfor %}|{% for c in 'héllo' %}{{ c }}.{% endfor %}`,
  },
  {
    name: "python-only-filters",
    variables: { items: ["b", "a", "c"], nums: [3, 1, 2], users: [{ name: "Bo", age: 30 }, { name: "al", age: 25 }] },
    template: String.raw`{{ 'xxhixx' | trim('x') }}|{{ 'abc' | reverse }}|{{ nums | sum }}|{{ nums | max }}|{{ nums | min }}|{{ items | count }}|{{ missing | d('short') }}|{{ [0, 1, 2, 3] | select('odd') | join }}|{{ [0, 1, '', 'a'] | select | list | length }}|{{ [1, 2, 3] | reject('equalto', 2) | join }}|{{ ['a', 'b'] | map('upper') | join }}|{{ 2.567 | round(2) }}|{{ 2.5 | round }}|{{ users | sort(attribute='name') | map(attribute='name') | join(',') }}|{{ users | sum(attribute='age') }}|{{ users | max(attribute='age') | attr('name') }}|{{ {'b': 1, 'a': 2} | dictsort | first | first }}|{{ users | map(attribute='missing', default='-') | join }}`,
  },
  {
    name: "python-only-tests",
    variables: { x: 1 },
    template: String.raw`{% if 6 is divisibleby(3) %}a{% endif %}{% if 7 is divisibleby 3 %}X{% endif %}{% if 'a' is in ['a'] %}b{% endif %}{% if 1.5 is float %}c{% endif %}{% if x is eq 1 %}d{% endif %}{% if x is sameas 1 %}e{% endif %}{% if none is sameas none %}f{% endif %}{% if x is not string %}g{% endif %}{% if x is ge 1 %}h{% endif %}{% if 'x' is callable %}X{% endif %}{% if range is callable %}i{% endif %}`,
  },
  {
    name: "python-only-string-methods",
    template: String.raw`{{ 'xxhixx'.strip('x') }}|{{ ', '.join(['p', 'q']) }}|{{ 'banana'.count('an') }}|{{ 'banana'.find('n') }}|{{ 'a b c'.rsplit(' ', 1) | join('|') }}|{{ 'l1\nl2\r\nl3'.splitlines() | join(',') }}|{{ 'pre-x'.removeprefix('pre-') }}|{{ 'x.txt'.removesuffix('.txt') }}|{{ '42'.isdigit() }}|{{ 'ab'.replace('', '-') }}|{{ 'hello world'.split('o') | length }}`,
  },
  {
    name: "python-only-whitespace-plus",
    template: "a\n  {%+ if true %}plus keeps indent{% endif %}\n{% if true +%}\nnewline kept\n{% endif %}\n  {#+ c +#}\nend",
  },
  {
    name: "python-only-printing-containers",
    variables: { d: { q: "it's", n: null, t: [1, [2, 'x']] } },
    template: String.raw`{{ d }}|{{ d.items() | list }}|{{ ('one',) }}|{{ 'a"b' ~ [("'")] }}|{{ -0.0 }}|{{ 1e300 * 10 }}|{{ 3.0 // 2 }}|{{ -7.5 % 2 }}`,
  },
];

// Whitespace control in every combination of tag markers, around text with and without line breaks:
// the rules (trim_blocks, lstrip_blocks, "-" and "+") are where template engines most often disagree.
const PRE = ["x\n  ", "x  ", "\n\t", "", "x\n"];
const POST = ["\n  y", "  y\n", "\n\ny", "", "\ny"];
const TAGS = [
  ["if", "{%", "%}"], ["if", "{%-", "%}"], ["if", "{%", "-%}"], ["if", "{%-", "-%}"], ["if", "{%+", "%}"], ["if", "{%", "+%}"],
  ["comment", "{#", "#}"], ["comment", "{#-", "#}"], ["comment", "{#", "-#}"], ["comment", "{#-", "-#}"],
  ["expr", "{{", "}}"], ["expr", "{{-", "}}"], ["expr", "{{", "-}}"], ["expr", "{{-", "-}}"],
];
for (const [kind, open, close] of TAGS) {
  const tag = kind === "if" ? `${open} if true ${close}T${open} endif ${close}` : kind === "comment" ? `${open} c ${close}` : `${open} 'E' ${close}`;
  const pieces = [];
  for (const pre of PRE) for (const post of POST) pieces.push(pre + tag + post);
  SYNTHETIC.push({ name: `whitespace-${kind}-${open}x${close}`, template: pieces.join("|") });
}

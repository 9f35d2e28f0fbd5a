using System.Text.Json.Nodes;
using OnnxDecoder.Runtime.Tokenization.Jinja;

namespace OnnxDecoder.Runtime.Tests.ChatTemplates;

/// <summary>Each construct of the language, rendered by our engine and by python3-jinja2 in transformers' mode.</summary>
[TestFixture]
public class JinjaLanguageTests
{
    private const string Data = """
        {"s": "  Hello World  ", "n": 7, "f": 2.5, "neg": -7, "t": true, "nil": null, "e": "", "l": [3, 1, 2], "empty": [],
         "d": {"b": 1, "a": 2, "items": "x"}, "words": ["b", "A", "a", "c"], "cjk": "你好，世界 🎉 é ع",
         "msgs": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
         "tools": [{"type": "function", "function": {"name": "get", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]}
        """;

    // Constructs that render: both sides must produce the same text.
    private static readonly string[] Renders =
    [
        "{{ s }}|{{ n }}|{{ f }}|{{ t }}|{{ nil }}|{{ e }}|{{ l }}|{{ d }}|{{ missing }}",
        "{{ 1.0 }} {{ 1e16 }} {{ 1e-5 }} {{ 0.1 + 0.2 }} {{ 3 / 2 }} {{ 4 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }}",
        "{{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 1 + 2 * 3 - 4 }} {{ (1 + 2) * 3 }} {{ -n }} {{ +n }} {{ True + 1 }} {{ 1 == 1.0 }} {{ 123456789.125 }}",
        "{{ 'a' ~ 1 ~ none ~ true }} {{ 'ab' * 3 }} {{ 3 * 'x' }} {{ [1] * 2 }} {{ [1] + [2] }} {{ 'a' + 'b' }}",
        "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 != 2 }} {{ 'a' in 'cat' }} {{ 2 not in l }} {{ 'a' in d }}",
        "{{ n is not none }} {{ nil is none }} {{ t and n }} {{ e or 'fallback' }} {{ not t }} {{ not e and n }}",
        "{{ 'yes' if t else 'no' }}|{{ 'yes' if e }}|{{ 'a' if false else 'b' if true else 'c' }}",
        "{{ l[0] }} {{ l[-1] }} {{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ s[2:7] }} {{ cjk[0] }} {{ cjk[-3:] }} {{ cjk[::-1] }} {{ l[10] }}|",
        "{{ d.a }} {{ d['b'] }} {{ d.missing }}|{{ d['missing'] }}|{{ msgs[0].role }} {{ msgs[1]['content'] }} {{ nil.x }}|",
        "{{ (1, 2) }} {{ ('a',) }} {{ () }} {{ [] }} {{ {} }} {{ {'k': [1, 'two', none, false, 1.5]} }} {{ {1: 'a', 'x': {'y': 'z'}} }}",
        "{{ \"it's\" }} {{ ['it\\'s', 'say \"hi\"', 'both \\' \"', 'tab\\tnew\\nline', '\\u00e9\\u200d'] }}",
        "{% if n > 5 %}big{% elif n > 2 %}mid{% else %}small{% endif %}{% if e %}x{% elif nil %}y{% else %}z{% endif %}",
        "{% for x in l %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}",
        "{% for x in l %}[{{ loop.previtem }}|{{ loop.nextitem }}|{{ loop.cycle('odd', 'even') }}]{% endfor %}",
        "{% for x in empty %}a{% else %}none{% endfor %}{% for x in l if x > 1 %}{{ x }}{{ loop.index }}{{ loop.length }}{% else %}no{% endfor %}",
        "{% for x in l %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}",
        "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}{% for c in 'abc' %}{{ c }}.{% endfor %}",
        "{% for m in msgs %}{% for x in l %}{{ loop.index }}{% endfor %}{{ loop.index }}{% endfor %}",
        "{% set x = 5 %}{% set y, z = 1, 2 %}{{ x }}{{ y }}{{ z }}{% for i in l %}{% set x = i %}{% endfor %}{{ x }}",
        "{% set ns = namespace(found=false, n=0) %}{% for m in msgs %}{% if m.role == 'user' %}{% set ns.found = true %}{% endif %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.found }}{{ ns.n }}",
        "{% set block %}  inner {{ n }}  {% endset %}[{{ block }}]{% set trimmed | trim %}  x  {% endset %}[{{ trimmed }}]",
        "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', '?') }} {{ greet(name='c', punct='.') }}",
        "{% macro m(a, b=2) %}{{ a }}{{ b }}{{ kwargs }}{{ varargs }}{% endmacro %}{{ m(1, 3, 4, k=5) }}",
        "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}body {{ n }}{% endcall %}",
        "{% macro each(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(item) each(l) %}<{{ item }}>{% endcall %}",
        "{% filter upper %}shout {{ s }}{% endfilter %}",
        "{% raw %}{{ not rendered }} {% if %}{% endraw %}after",
        "{{ s|trim }}|{{ s|trim('  Hd') }}|{{ s|upper }}|{{ s|lower }}|{{ s|title }}|{{ 'hELLO wORLD'|capitalize }}|{{ s|length }}|{{ cjk|length }}",
        "{{ l|join(',') }} {{ words|join }} {{ msgs|join(', ', attribute='role') }} {{ l|first }} {{ l|last }} {{ empty|first }}|{{ l|length }} {{ l|count }}",
        "{{ missing|default('dflt') }} {{ e|default('dflt') }} {{ e|default('dflt', true) }} {{ nil|d('x', boolean=true) }} {{ n|default(1) }}",
        "{{ msgs|map(attribute='role')|list }} {{ words|map('upper')|join }} {{ l|map('string')|join('-') }} {{ msgs|map(attribute='nope', default='?')|list }}",
        "{{ l|select('odd')|list }} {{ l|reject('odd')|list }} {{ msgs|selectattr('role', 'equalto', 'user')|list }} {{ msgs|rejectattr('role', 'in', ['user', 'system'])|map(attribute='content')|first }}",
        "{{ [0, 1, '', 'a', none]|select|list }} {{ msgs|selectattr('content')|list|length }} {{ l|select('greaterthan', 1)|list }} {{ l|select('divisibleby', 3)|list }}",
        "{{ d|dictsort }} {{ d|dictsort(reverse=true) }} {{ {'B': 1, 'a': 2}|dictsort }} {{ {'B': 1, 'a': 2}|dictsort(true) }} {{ {'x': 2, 'y': 1}|dictsort(by='value') }}",
        "{{ d|items|list }} {{ missing|items|list }}",
        "{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent(2, blank=true) }}|{{ 'x\\ny'|indent('> ') }}",
        "{{ n|string }} {{ l|string }} {{ '42'|int }} {{ '3.9'|int }} {{ 'x'|int }} {{ 'x'|int(5) }} {{ 2.7|int }} {{ '2.5'|float }} {{ 3|float }} {{ 'a'|float }}",
        "{{ 'abc'|list }} {{ d|list }} {{ words|unique|list }} {{ words|unique(case_sensitive=true)|list }} {{ [1, 1.0, 2]|unique|list }}",
        "{{ neg|abs }} {{ f|round }} {{ 3.14159|round(2) }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.45|round(1, 'floor') }} {{ 2.41|round(1, 'ceil') }} {{ 7|round }}",
        "{{ l|sum }} {{ [1.5, 2]|sum }} {{ l|min }} {{ l|max }} {{ words|min }} {{ words|max }} {{ words|max(case_sensitive=true) }} {{ l|sum(start=10) }}",
        "{{ l|reverse|list }} {{ 'abc'|reverse }} {{ l|sort }} {{ l|sort(reverse=true) }} {{ words|sort }} {{ words|sort(case_sensitive=true) }} {{ msgs|sort(attribute='role')|map(attribute='role')|join }}",
        "{{ l|batch(2)|list }} {{ l|batch(2, 'x')|list }} {{ 'one two, three'|wordcount }} {{ '%s-%d'|format('a', 3) }} {{ s|safe }} {{ '<a&b>'|e }} {{ 'x'|center(5) }}|",
        "{{ tools|tojson }}|{{ msgs[0]|tojson(indent=2) }}|{{ d|tojson(sort_keys=true) }}|{{ cjk|tojson }}|{{ l|tojson(separators=(',', ':')) }}|{{ {'a': [], 'b': {}}|tojson(indent=4) }}",
        "{{ [1.0, 2.5e-7, 1e100, -0.0, none, true, 'q\"\\\\\\n\\t\\u0001']|tojson }}|{{ {'k': 1}|tojson(indent='\\t') }}",
        "{{ n is defined }} {{ missing is defined }} {{ missing is undefined }} {{ nil is none }} {{ s is string }} {{ d is mapping }} {{ l is mapping }} {{ l is iterable }} {{ n is iterable }}",
        "{{ s is sequence }} {{ d is sequence }} {{ n is number }} {{ f is number }} {{ t is number }} {{ n is integer }} {{ f is integer }} {{ f is float }} {{ t is boolean }} {{ n is boolean }}",
        "{{ t is true }} {{ n is true }} {{ false is false }} {{ 'a' is in 'cat' }} {{ 3 is in l }} {{ n is eq 7 }} {{ n is equalto(7) }} {{ n is ne(7) }} {{ n is odd }} {{ n is even }} {{ 9 is divisibleby 3 }}",
        "{{ greet is callable }} {{ n is callable }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 'aBc' is lower }} {{ range is callable }} {{ nil is sameas none }}",
        "{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ 'xxhixx'.strip('x') }}|{{ '\\n\\t a \\n'.strip() }}|{{ 'ab'.lstrip('a') }}|{{ 'ab'.rstrip('b') }}",
        "{{ 'a b  c'.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} {{ '  a  b  '.split(none, 1) }} {{ 'a,b,c'.rsplit(',', 1) }} {{ 'l1\\nl2\\r\\nl3'.splitlines() }}",
        "{{ s.startswith('  He') }} {{ s.endswith('d  ') }} {{ 'abc'.startswith(('x', 'a')) }} {{ 'abc'.endswith(('x', 'y')) }} {{ 'aaa'.replace('a', 'b', 2) }} {{ 'abc'.replace('', '-') }}",
        "{{ 'Hello'.lower() }} {{ 'Hello'.upper() }} {{ \"they're bill's 2nd\".title() }} {{ 'hELLO'.capitalize() }} {{ 'abcabc'.find('c') }} {{ 'abc'.find('z') }} {{ 'abcabc'.rfind('b') }} {{ 'aaaa'.count('aa') }}",
        "{{ ', '.join(['a', 'b']) }} {{ '123'.isdigit() }} {{ '12a'.isdigit() }} {{ 'ab'.isalpha() }} {{ ' '.isspace() }} {{ 'ab'.islower() }} {{ 'AB'.isupper() }} {{ '{} and {}'.format('x', 1) }} {{ '{0}{name}'.format('a', name='b') }}",
        "{{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 'dflt') }} {{ d.keys()|list }} {{ d.values()|list }} {{ d['items'] }} {{ l.index(2) }} {{ l.count(3) }}",
        "{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(5, 0, -2)|list }} {{ dict(a=1, b=[2]) }} {{ namespace(a=1).a }}",
        "{% set ns = namespace(a=1, b='x') %}{{ ns }} {% set ns.c = [ns.a] %}{{ ns.c }} {{ ns.missing }}|",
        "{{ strftime_now('%Y-%m-%d %H:%M:%S') }} {{ strftime_now('%d %b %Y') }} {{ strftime_now('%A %B %j %y %I%p') }}",
        "{{ 'adjacent' 'strings' }} {{ 1_000 }} {{ 0.5e1 }} {{ \"esc\\x41\\u00e9\\\\d\" }}",
        // Whitespace control, trim_blocks and lstrip_blocks.
        "a  {{- ' b ' -}}  c\n  {%- if true -%}  d  {%- endif -%}  \n e {#- comment -#} f",
        "line1\n    {% if true %}\n    inside\n    {% endif %}\n    {# comment #}\nafter\n  {%+ if true %}kept{% endif %}\n",
        "{% for m in msgs %}\n  {{ m.role }}: {{ m.content }}\n{% endfor %}\n{% if true %}   \ntail{% endif %}",
        "x\n\t{% set y = 1 %}\n  {{ y }}\n  {%- set z = 2 %}  z{{ z }}\r\nwindows\r\n{% raw -%}   raw  {%- endraw %}\n",
        "{%- for m in msgs -%}\n{{- m.role -}}\n{%- if not loop.last -%},{%- endif -%}\n{%- endfor -%}\n\n",
        "{% generation %}gen {{ n }}{% endgeneration %}",
        "{{ cjk|upper }} {{ 'ÉCOLE'|lower }} {{ 'مرحبا بالعالم'|length }} {{ '👩‍💻'|length }} {{ '👩‍💻'|list }} {{ cjk.split() }}",
        "{{ msgs[1:]|map(attribute='content')|join('|') }} {{ (msgs|last).role }} {{ msgs[-1]['role'] == 'assistant' }} {{ msgs|length > 2 }}",
    ];

    // Constructs that fail in Jinja2: both sides must refuse.
    private static readonly string[] Fails =
    [
        "{{ missing.attr }}",
        "{{ missing['k'] }}",
        "{{ missing + 1 }}",
        "{{ raise_exception('refused') }}",
        "{% set l2 = [1] %}{{ l2.append(2) }}",
        "{{ d.update({'x': 1}) }}",
        "{{ 'a' + 1 }}",
        "{{ 1 / 0 }}",
        "{{ 5 // 0 }}",
        "{{ l < 'a' }}",
        "{% if %}{% endif %}",
        "{% for x in l %}",
        "{% endif %}",
        "{{ 1 +* 2 }}",
        "{{ x | nosuchfilter }}",
        "{{ 1 is nosuchtest }}",
        "{% set x = 1 %}{% set x.y = 2 %}",
        "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}",
        "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(b=2) }}",
        "{{ n() }}",
        "{% for a, b in l %}{% endfor %}",
        "{{ 'abc'|tojson(bad=1) }}",
        "{{ 'unterminated }}",
        "{% unknowntag %}",
        "{{ ''.join([1, 2]) }}",
        "{{ 'x'.split('') }}",
    ];

    private static List<TemplateCase> Cases(string[] templates, string prefix) =>
        [.. templates.Select((t, i) => new TemplateCase($"{prefix}[{i}] {t[..Math.Min(t.Length, 60)].ReplaceLineEndings(" ")}", t, JsonNode.Parse(Data)!.AsObject()))];

    [Test]
    public void Each_construct_renders_as_python3_jinja2_renders_it()
    {
        var cases = Cases(Renders, "renders");
        var reference = Jinja2Reference.Render(cases);
        var refused = cases.Where((c, i) => reference[i].Error is not null).Select((c, i) => $"{c.Label}: {reference[cases.IndexOf(c)]}").ToList();
        Assert.That(refused, Is.Empty, "these table rows should render in Jinja2; fix the table");
        Jinja2Reference.AssertAgree(cases);
    }

    [Test]
    public void What_python3_jinja2_refuses_is_refused_with_a_one_line_located_error()
    {
        var cases = Cases(Fails, "fails");
        var reference = Jinja2Reference.Render(cases);
        Assert.Multiple(() =>
        {
            for (int i = 0; i < cases.Count; i++)
            {
                Assert.That(reference[i].Error, Is.Not.Null, $"{cases[i].Label}: Jinja2 rendered it, fix the table");
                var ours = Jinja2Reference.RenderOurs(cases[i]);
                Assert.That(ours.Error, Is.Not.Null, $"{cases[i].Label}: Jinja2 refused ({reference[i].Error}) but ours rendered {ours}");
                if (ours.Error is null) continue;
                Assert.That(ours.Error, Does.Match($@"^template '{System.Text.RegularExpressions.Regex.Escape(cases[i].Label)}' line \d+ column \d+: \S"));
                Assert.That(ours.Error, Does.Not.Contain("\n"));
            }
        });
    }

    [Test]
    public void Errors_name_the_line_and_column_of_the_construct()
    {
        var syntax = Assert.Throws<TemplateError>(() => ChatTemplateEngine.Compile("line one\n  {% if x %}\n    {{ 1 +* 2 }}\n{% endif %}", "t.jinja"))!;
        Assert.That((syntax.Line, syntax.Column), Is.EqualTo((3, 11)));
        Assert.That(syntax.Message, Does.StartWith("template 't.jinja' line 3 column 11: "));

        var raised = Assert.Throws<TemplateError>(() => ChatTemplateEngine.Compile("ok\n{% if true %}\n  {{ raise_exception('System role not supported') }}{% endif %}", "chat")
            .Render(new Dictionary<string, JsonNode?>()))!;
        Assert.That(raised.Message, Is.EqualTo("template 'chat' line 3 column 6: raise_exception: System role not supported"));

        var missing = Assert.Throws<TemplateError>(() => ChatTemplateEngine.Compile("{% for m in messages %}\n{{ m.content.strip() }}{% endfor %}", "t")
            .Render(new Dictionary<string, JsonNode?> { ["messages"] = JsonNode.Parse("[{\"role\": \"user\"}]") }))!;
        Assert.That((missing.Line, missing.Message), Is.EqualTo((2, "template 't' line 2 column 13: 'dict object' has no attribute 'content' (in attribute .strip)")));

        var unsupported = Assert.Throws<TemplateError>(() => ChatTemplateEngine.Compile("{% extends 'base.html' %}", "t"))!;
        Assert.That(unsupported.Message, Does.Contain("line 1 column 4").And.Contain("{% extends %} is not supported"));
    }

    [Test]
    public void Sandbox_limits_stop_runaway_templates_with_an_error_naming_the_limit()
    {
        var none = new Dictionary<string, JsonNode?>();
        var loops = Assert.Throws<TemplateError>(() =>
            ChatTemplateEngine.Compile("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "t").Render(none))!;
        Assert.That(loops.Message, Does.Contain("MaxLoopIterations"));
        var output = Assert.Throws<TemplateError>(() =>
            ChatTemplateEngine.Compile("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "t").Render(none))!;
        Assert.That(output.Message, Does.Contain("MaxOutputLength"));
        var repeat = Assert.Throws<TemplateError>(() => ChatTemplateEngine.Compile("{{ 'x' * 100000000000 }}", "t").Render(none))!;
        Assert.That(repeat.Message, Does.Contain("MaxOutputLength"));
        var recursion = Assert.Throws<TemplateError>(() =>
            ChatTemplateEngine.Compile("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}", "t").Render(none))!;
        Assert.That(recursion.Message, Does.Contain("MaxRecursionDepth"));
        var range = Assert.Throws<TemplateError>(() => ChatTemplateEngine.Compile("{{ range(1000000)|length }}", "t").Render(none))!;
        Assert.That(range.Message, Does.Contain("MaxRange"));
        var nesting = Assert.Throws<TemplateError>(() => ChatTemplateEngine.Compile("{{ " + new string('(', 5000) + "1" + new string(')', 5000) + " }}", "t"))!;
        Assert.That(nesting.Message, Does.Contain("MaxNestingDepth"));
        var deepIf = Assert.Throws<TemplateError>(() => ChatTemplateEngine.Compile(string.Concat(Enumerable.Repeat("{% if true %}", 5000)), "t"))!;
        Assert.That(deepIf.Message, Does.Contain("MaxNestingDepth"));
    }

    [Test]
    public void A_compiled_template_renders_many_times_with_fresh_state()
    {
        var template = ChatTemplateEngine.Compile("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}", "t");
        var variables = new Dictionary<string, JsonNode?> { ["messages"] = JsonNode.Parse("[1, 2, 3]") };
        Assert.That(template.Render(variables), Is.EqualTo("3"));
        Assert.That(template.Render(variables), Is.EqualTo("3"));
    }
}

/// <summary>Templates are files we did not write: mutated real templates must fail only with located one-line errors.</summary>
[TestFixture]
public class TemplateMutationTests
{
    [Test]
    public void Mutated_real_templates_fail_only_with_template_errors_and_never_with_an_unexpected_exception()
    {
        var templates = TemplateCorpus.Load(OnnxDecoder.Tests.Shared.TestPaths.RepoRoot);
        var conversation = TemplateCorpus.Conversations().First(c => c.Label == "tool call and result");
        var random = new Random(13);
        const string Pieces = "{}%#-+()[]|.,:'\"~*/ \n\tifelseforendsetmacroloopnotinis0123456789";
        int rendered = 0, refused = 0, unexpected = 0;
        var firstUnexpected = new List<string>();
        foreach (var template in templates)
        {
            var variables = TemplateCorpus.Variables(template, conversation.Messages, conversation.Extra).ToDictionary(p => p.Key, p => p.Value);
            for (int i = 0; i < 60; i++)
            {
                var chars = template.Source.ToCharArray().ToList();
                int edits = 1 + random.Next(4);
                for (int e = 0; e < edits && chars.Count > 0; e++)
                {
                    int at = random.Next(chars.Count);
                    switch (random.Next(4))
                    {
                        case 0: chars.RemoveAt(at); break;
                        case 1: chars.Insert(at, Pieces[random.Next(Pieces.Length)]); break;
                        case 2: chars[at] = Pieces[random.Next(Pieces.Length)]; break;
                        default: chars.RemoveRange(at, Math.Min(chars.Count - at, random.Next(1, 40))); break;
                    }
                }
                string source = new([.. chars]);
                try
                {
                    ChatTemplateEngine.Compile(source, "mutant").Render(variables, () => Jinja2Reference.FixedNow);
                    rendered++;
                }
                catch (TemplateError e)
                {
                    refused++;
                    if (e.Message.Contains("cannot evaluate this") || e.Message.Contains("cannot parse this") || e.Message.Contains('\n'))
                    {
                        unexpected++;
                        if (firstUnexpected.Count < 10) firstUnexpected.Add(e.Message);
                    }
                }
            }
        }
        TestContext.Out.WriteLine($"{rendered} mutants rendered, {refused} refused");
        Assert.That(unexpected, Is.Zero, "mutants that hit an unexpected exception:\n" + string.Join("\n", firstUnexpected));
    }
}

"""Renders chat templates with Debian's python3-jinja2 exactly as transformers sets it up.

The independent reference for our Jinja engine. Input (stdin): {"now": "YYYY-MM-DDTHH:MM:SS",
"cases": [{"template": str, "variables": {...}}]}. Output (stdout): one entry per case, in order:
{"text": str} or {"error": "ExceptionType: message"}. With --bench N every case is rendered N times
and the output is [{"seconds_per_render": float}] instead.
"""
import datetime
import json
import sys
import time

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox


class GenerationTag(jinja2.ext.Extension):
    """transformers' AssistantTracker without the mask bookkeeping: {% generation %} renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_environment(now):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return now.strftime(format)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    request = json.load(sys.stdin)
    now = datetime.datetime.fromisoformat(request.get("now", "2024-07-26T10:00:00"))
    env = make_environment(now)
    bench = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[1] == "--bench" else 0
    compiled = {}
    results = []
    for case in request["cases"]:
        source = case["template"]
        try:
            if source not in compiled:
                compiled[source] = env.from_string(source)
            template = compiled[source]
            if bench:
                template.render(**case["variables"])
                start = time.perf_counter()
                for _ in range(bench):
                    template.render(**case["variables"])
                results.append({"seconds_per_render": (time.perf_counter() - start) / bench})
            else:
                results.append({"text": template.render(**case["variables"])})
        except Exception as e:  # every failure is data: the C# side compares "both failed"
            results.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(results, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()

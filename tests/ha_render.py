"""Plays Home Assistant's part for tests/examples.rs: loads configuration.yaml (PyYAML,
with HA's !secret/!input/!include tags read as placeholders), takes the automation
triggered by the `event_type` in argv[2], and for the event data in argv[3] (JSON, the
shape the Companion app's notification action produces: `action`, `reply_text`) checks
its conditions, picks its `choose` branch, renders the branch's `rest_command` data
with Jinja2 as HA does (sandboxed; results that look like numbers become numbers, as
HA's native types do), then renders that rest_command's payload. Prints
{"url", "method", "body"}, or {} when the automation would not call a rest_command.
"""

import json
import re
import sys

import jinja2.sandbox
import yaml


class Loader(yaml.SafeLoader):
    pass


for tag in ("!secret", "!input", "!include", "!include_dir_named", "!env_var"):
    Loader.add_constructor(tag, lambda loader, node: f"<{loader.construct_scalar(node)}>")

env = jinja2.sandbox.ImmutableSandboxedEnvironment()
env.filters["to_json"] = json.dumps
# homeassistant/helpers/template.py: _IS_NUMERIC and _parse_result.
NUMERIC = re.compile(r"^[+-]?(?!0\d)\d*(?:\.\d*)?$")


def native(text):
    if text and NUMERIC.match(text):
        return float(text) if "." in text else int(text)
    return text


def render(template, **context):
    return env.from_string(template).render(**context).strip()


def truthy(template, context):
    return render(template, **context).lower() == "true"


def main(path, event_type, event_data):
    config = yaml.load(open(path), Loader=Loader)
    context = {"trigger": {"event": {"event_type": event_type, "data": event_data}}}
    automation = next(
        a for a in config["automation"]
        if any(t.get("event_type") == event_type for t in a["triggers"])
    )
    if not all(truthy(c["value_template"], context) for c in automation.get("conditions", [])):
        print("{}")
        return
    steps = automation["actions"]
    for step in list(steps):
        for option in step.get("choose", []):
            if all(truthy(c["value_template"], context) for c in option["conditions"]):
                steps = option["sequence"]
                break
    call = next(s for s in steps if str(s.get("action", "")).startswith("rest_command."))
    rest = config["rest_command"][call["action"].split(".", 1)[1]]
    data = {k: native(render(v, **context)) for k, v in call.get("data", {}).items()}
    print(json.dumps({
        "url": rest["url"],
        "method": rest["method"],
        "body": render(rest["payload"], **data),
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))

"""Google's own Compute v1 discovery document: routing of REST paths to method ids, and validation of
query parameters and request bodies against the document's schemas (the local Compute API's rules).

The document is the one google-api-python-client ships
(googleapiclient/discovery_cache/documents/compute.v1.json); pass another path to load() to pin one.
Stdlib only.
"""
import importlib.util
import json
import os
import re

DOC_RELPATH = os.path.join("discovery_cache", "documents", "compute.v1.json")


def default_path():
    spec = importlib.util.find_spec("googleapiclient")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("google-api-python-client is not installed: the local Compute API needs its "
                           "discovery document (pip install google-api-python-client, or pass --discovery FILE)")
    for base in spec.submodule_search_locations:
        path = os.path.join(base, DOC_RELPATH)
        if os.path.exists(path):
            return path
    raise RuntimeError("google-api-python-client has no %s" % DOC_RELPATH)


class Violation(object):
    """One problem with a request: reason is Google's (invalid, required, badRequest)."""

    def __init__(self, message, reason="invalid", location=None):
        self.message = message
        self.reason = reason
        self.location = location

    def as_error(self):
        err = {"message": self.message, "domain": "global", "reason": self.reason}
        if self.location:
            err["location"] = self.location
            err["locationType"] = "parameter"
        return err


class Method(object):
    def __init__(self, doc):
        self.id = doc["id"]
        self.http_method = doc["httpMethod"]
        self.path = doc["path"]
        self.parameters = doc.get("parameters") or {}
        self.request_ref = (doc.get("request") or {}).get("$ref")
        literal = 0
        parts = []
        for seg in re.split(r"(\{[+]?[A-Za-z_]+\})", self.path):
            if not seg:
                continue
            m = re.match(r"^\{([+]?)([A-Za-z_]+)\}$", seg)
            if m:
                parts.append("(?P<%s>%s)" % (m.group(2), ".+" if m.group(1) else "[^/]+"))
            else:
                literal += len(seg)
                parts.append(re.escape(seg))
        self.regex = re.compile("^" + "".join(parts) + "$")
        self.literal = literal


class Discovery(object):
    def __init__(self, path=None):
        self.path = path or default_path()
        with open(self.path, "rb") as f:
            self.doc = json.loads(f.read().decode("utf-8"))
        self.schemas = self.doc["schemas"]
        self.global_params = self.doc.get("parameters") or {}
        self.revision = self.doc.get("revision")
        self.methods = {}
        self._routes = {}
        for method in self._walk(self.doc.get("resources") or {}):
            self.methods[method.id] = method
            self._routes.setdefault(method.http_method, []).append(method)
        for routes in self._routes.values():
            routes.sort(key=lambda m: -m.literal)

    def _walk(self, resources):
        for res in resources.values():
            for m in (res.get("methods") or {}).values():
                yield Method(m)
            yield from self._walk(res.get("resources") or {})

    def route(self, http_method, path):
        """(Method, path parameters) for a path relative to compute/v1/, or (None, None)."""
        for method in self._routes.get(http_method, ()):
            m = method.regex.match(path)
            if m:
                return method, m.groupdict()
        return None, None

    def known_path(self, path):
        """The HTTP methods some method of the document accepts at `path` (for 405 vs 404)."""
        return sorted(hm for hm, routes in self._routes.items() if any(r.regex.match(path) for r in routes))

    # ------------------------------------------------------------------ parameters
    def check_params(self, method, path_params, query):
        """Violations of the path and query parameters. query: dict name -> list of values."""
        out = []
        for name, value in path_params.items():
            spec = method.parameters.get(name) or {}
            pattern = spec.get("pattern")
            if pattern and not re.fullmatch(pattern, value):
                out.append(Violation("Invalid value for field '%s': '%s'. Must be a match of regex %s"
                                     % (name, value, pattern), "invalid", name))
        for name, values in query.items():
            spec = method.parameters.get(name)
            if spec is None or spec.get("location") != "query":
                spec = self.global_params.get(name)
            if spec is None:
                out.append(Violation("Invalid JSON payload received. Unknown name \"%s\": Cannot bind query "
                                     "parameter. Field '%s' could not be found in request message."
                                     % (name, name), "invalid", name))
                continue
            if len(values) > 1 and not spec.get("repeated"):
                out.append(Violation("Invalid value for field '%s': repeated %d times" % (name, len(values)),
                                     "invalid", name))
            for value in values:
                err = self._check_scalar(value, spec, from_query=True)
                if err:
                    out.append(Violation("Invalid value for field '%s': '%s'. %s" % (name, value, err),
                                         "invalid", name))
        for name, spec in method.parameters.items():
            if spec.get("required") and spec.get("location") == "query" and name not in query:
                out.append(Violation("Required parameter '%s' not specified" % name, "required", name))
        return out

    @staticmethod
    def _check_scalar(value, spec, from_query=False):
        """None, or what is wrong with a scalar `value` for the schema `spec`."""
        typ = spec.get("type")
        fmt = spec.get("format")
        if typ == "string":
            if not isinstance(value, str):
                hint = " (%s, written as a JSON string)" % fmt if fmt else ""
                return "Expected a string%s, got %s" % (hint, type(value).__name__)
            if fmt in ("int64", "uint64") and not re.fullmatch(r"-?[0-9]+", value):
                return "Expected an %s integer written as a string" % fmt
            if fmt == "uint64" and value.startswith("-"):
                return "Expected a non-negative integer"
            enum = spec.get("enum")
            if enum and value not in enum:
                return "Expected one of %s" % ", ".join(enum)
            pattern = spec.get("pattern")
            if pattern and from_query and not re.fullmatch(pattern, value):
                return "Must be a match of regex %s" % pattern
            return None
        if typ == "integer":
            if from_query and isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                return "Expected an integer (%s), got %s" % (fmt or "int32", type(value).__name__)
            low = spec.get("minimum")
            high = spec.get("maximum")
            if fmt == "uint32":
                low = low if low is not None else 0
                high = high if high is not None else 2 ** 32 - 1
            elif fmt == "int32" or fmt is None:
                low = low if low is not None else -2 ** 31
                high = high if high is not None else 2 ** 31 - 1
            if low is not None and value < int(low):
                return "Must be at least %s" % low
            if high is not None and value > int(high):
                return "Must be at most %s" % high
            return None
        if typ == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                if from_query:
                    try:
                        float(value)
                        return None
                    except ValueError:
                        pass
                return "Expected a number, got %s" % type(value).__name__
            return None
        if typ == "boolean":
            if from_query:
                return None if value in ("true", "false") else "Expected true or false"
            if not isinstance(value, bool):
                return "Expected a boolean (true or false), got %s" % type(value).__name__
            return None
        return None

    # ------------------------------------------------------------------ bodies
    def check_body(self, method, body):
        """Violations of a request body against the method's request schema (annotations.required of
        this method included). Output-only fields are accepted and ignored, as Google does."""
        out = []
        if method.request_ref is None:
            if body not in (None, {}, b"", ""):
                out.append(Violation("Invalid JSON payload received. %s takes no request body" % method.id))
            return out
        if body is None:
            body = {}
        self._check_value(body, {"$ref": method.request_ref}, "resource", method.id, out)
        return out

    def _check_value(self, value, spec, where, method_id, out):
        if "$ref" in spec:
            spec = self.schemas[spec["$ref"]]
        typ = spec.get("type")
        if typ == "object" or "properties" in spec or "additionalProperties" in spec:
            if not isinstance(value, dict):
                out.append(Violation("Invalid JSON payload received. Invalid value at '%s': expected an object "
                                     "(%s), got %s" % (where, spec.get("id", "object"), type(value).__name__)))
                return
            props = spec.get("properties") or {}
            extra = spec.get("additionalProperties")
            for key, item in value.items():
                sub = props.get(key)
                if sub is None and extra is not None:
                    sub = extra
                if sub is None:
                    out.append(Violation("Invalid JSON payload received. Unknown name \"%s\" at '%s': Cannot "
                                         "find field." % (key, where)))
                    continue
                self._check_value(item, sub, "%s.%s" % (where, key) if sub is not extra else
                                  "%s[%s]" % (where, key), method_id, out)
            for key, sub in props.items():
                required = (sub.get("annotations") or {}).get("required") or ()
                if method_id in required and value.get(key) in (None, ""):
                    out.append(Violation("Required field '%s.%s' not specified" % (where, key), "required"))
            return
        if typ == "array":
            if not isinstance(value, list):
                out.append(Violation("Invalid JSON payload received. Invalid value at '%s': expected a list, got "
                                     "%s" % (where, type(value).__name__)))
                return
            for i, item in enumerate(value):
                self._check_value(item, spec.get("items") or {}, "%s[%d]" % (where, i), method_id, out)
            return
        if typ == "any" or typ is None:
            return
        if value is None:
            return  # JSON null = field not set
        # Strictly the document's types: int64/uint64 fields are JSON strings ("200"), integer fields
        # JSON numbers (Google's proto3 JSON parser would also take the other spelling; clients must not rely on it).
        err = self._check_scalar(value, spec)
        if err:
            out.append(Violation("Invalid value at '%s' (%s): %r. %s" % (where, spec.get("format") or typ, value, err)))

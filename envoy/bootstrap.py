"""Builds Envoy bootstrap configurations for the demo, the end-to-end tests and the benchmarks.

Two front ends of the same filter: `wasm` (the proxy-wasm module, dist/web_bot_auth.wasm, in
`envoy.filters.http.wasm`) and `native` (the Envoy dynamic module, dist/libweb_bot_auth.so, in
`envoy.filters.http.dynamic_modules`, which Envoy finds in $ENVOY_DYNAMIC_MODULES_SEARCH_PATH).
`filters(front, ...)` gives either's filter entries for the same plugin configuration.

Every listener and the admin interface bind to port 0 on loopback; the harness reads the
ports Envoy chose from the admin API, so runs never collide. `minimal.yaml` next to this file
is the same shape, written out by hand for operators to copy.
"""

import json

# The access-log line every configuration here uses: the verdict from filter state.
ACCESS_LOG_FORMAT = (
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%\" %RESPONSE_CODE% "
    "wba_result=%FILTER_STATE(wasm.wba.result:PLAIN)% "
    "wba_reason=%FILTER_STATE(wasm.wba.reason:PLAIN)% "
    "wba_agent=%FILTER_STATE(wasm.wba.agent:PLAIN)% "
    "wba_key_id=%FILTER_STATE(wasm.wba.key_id:PLAIN)% "
    "wba_proof=%FILTER_STATE(wasm.wba.directory_proof:PLAIN)%\n"
)


def wasm_filter(wasm_path, plugin_config, name="web_bot_auth"):
    """The `envoy.filters.http.wasm` entry for the Web Bot Auth filter. `plugin_config` may be a
    string (passed on as is)."""
    value = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": "web_bot_auth",
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": value,
                },
                # Fail closed: a filter that cannot load must not let traffic through unchecked.
                "fail_open": False,
                "vm_config": {
                    "vm_id": "web_bot_auth",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm_path}},
                },
            },
        },
    }


def wasm_filters(wasm_path, plugin_config, name="web_bot_auth"):
    """The Web Bot Auth filter entries: its `hold` companion, then the filter. Envoy's Wasm host
    gives a filter that holds a request's headers none of its body, so the companion, placed
    before the filter in the same VM, hashes the body of a request whose signature covers it
    (Content-Digest) while the filter keeps the request from the upstream until the body is
    checked. A chain without the companion before the filter refuses such requests (500)."""
    return [
        wasm_filter(wasm_path, {"role": "hold"}, name=f"{name}_hold"),
        wasm_filter(wasm_path, plugin_config, name=name),
    ]


# The native module's name: Envoy loads lib<NATIVE_MODULE>.so from the search path.
NATIVE_MODULE = "web_bot_auth"
FRONTS = ("wasm", "native")
# Where Envoy puts each front end's stats: proxy-wasm's `wasmcustom.`, dynamic modules'
# `dynamicmodulescustom.` (their default metrics_namespace).
STATS_PREFIX = {"wasm": "wasmcustom.", "native": "dynamicmodulescustom."}


def native_filter(plugin_config, module=NATIVE_MODULE):
    """The `envoy.filters.http.dynamic_modules` entry for the Web Bot Auth filter, with the same
    JSON configuration as the Wasm plugin's. It buffers a body it must check itself: one entry,
    no companion. `plugin_config` may be a string (passed on as is)."""
    value = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
    return {
        "name": "envoy.filters.http.dynamic_modules",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": module, "do_not_close": True},
            "filter_name": "web_bot_auth",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": value},
        },
    }


def filters(front, plugin_config, name="web_bot_auth", wasm_path=None, hold=True):
    """The Web Bot Auth filter entries for front end `front` ("wasm" or "native"): for wasm, the
    hold companion and the filter (`hold=False`: the filter alone), from the module at
    `wasm_path`; for native, the one dynamic module filter (`name` is the Wasm plugin's name, so
    has no counterpart there; the module is found by its file name)."""
    if front == "wasm":
        if not wasm_path:
            raise ValueError("the wasm front end needs the module's path")
        if hold:
            return wasm_filters(wasm_path, plugin_config, name=name)
        return [wasm_filter(wasm_path, plugin_config, name=name)]
    if front == "native":
        return [native_filter(plugin_config)]
    raise ValueError(f"unknown front end {front!r}: one of {', '.join(FRONTS)}")


def listener(name, cluster, http_filters, access_log_path=None, underscores="REJECT_REQUEST"):
    """A loopback HTTP listener on an ephemeral port routing everything to `cluster`.

    `underscores` is Envoy's `headers_with_underscores_action`: REJECT_REQUEST by default, as
    defence in depth (the filter strips `x_web_bot_auth_*` itself; upstreams that fold `_` and
    `-` together must never see a client's copy); the tests also run ALLOW to prove the filter.
    """
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "common_http_protocol_options": {"headers_with_underscores_action": underscores},
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
                }
            ]
        },
        "http_filters": list(http_filters)
        + [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    if access_log_path:
        hcm["access_log"] = [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": access_log_path,
                    "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
                },
            }
        ]
    return {
        "name": name,
        "stat_prefix": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def cluster(name, port, host="127.0.0.1", timeout="2s"):
    """A static plain-HTTP cluster with one loopback endpoint."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": timeout,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": host, "port_value": port}}
                            }
                        }
                    ]
                }
            ],
        },
    }


def bootstrap(listeners, clusters):
    """A complete bootstrap; the admin interface also binds an ephemeral loopback port."""
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }

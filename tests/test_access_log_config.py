"""The http_connection_manager's access_log in the config: what is accepted, what it becomes in
the model, and what is refused, with the exact path.

Envoy reference: config/accesslog/v3/accesslog.proto (AccessLog), extensions/access_loggers/
file/v3/file.proto (FileAccessLog), extensions/access_loggers/stream/v3/stream.proto
(StdoutAccessLog, StderrAccessLog), config/core/v3/substitution_format_string.proto.
"""
import pytest

from proxy.access_log import DEFAULT_FORMAT
from proxy.config import ConfigError, load_dict
from proxy.config.model import AccessLogConfig
from tests.test_config_loader import HCM, config, hcm

T = "type.googleapis.com/"
FILE_T = T + "envoy.extensions.access_loggers.file.v3.FileAccessLog"
STDOUT_T = T + "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
STDERR_T = T + "envoy.extensions.access_loggers.stream.v3.StderrAccessLog"
AL = HCM + ".access_log[0]"


def with_logs(*entries) -> dict:
    doc = config()
    hcm(doc)["access_log"] = list(entries)
    return doc


def logs_of(*entries) -> list[AccessLogConfig]:
    return load_dict(with_logs(*entries)).listeners[0].hcm.access_logs


def refusal(*entries) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_dict(with_logs(*entries))
    return info.value


def file_log(path, **fields) -> dict:
    return {"name": "envoy.access_loggers.file", "typed_config": {"@type": FILE_T, "path": path,
                                                                  **fields}}


# --- accepted ----------------------------------------------------------------------------------

def test_no_access_log_means_an_empty_list():
    assert load_dict(config()).listeners[0].hcm.access_logs == []


def test_stdout_logger_by_name_alone_uses_the_default_format():
    [a] = logs_of({"name": "envoy.access_loggers.stdout"})
    assert (a.logger, a.path, a.text_format, a.json_format) == (
        "envoy.access_loggers.stdout", "/dev/stdout", None, None)


def test_stderr_logger_by_type_url_whatever_its_name():
    [a] = logs_of({"name": "anything", "typed_config": {"@type": STDERR_T}})
    assert (a.logger, a.path, a.name) == ("envoy.access_loggers.stderr", "/dev/stderr", "anything")


def test_the_type_url_decides_between_stdout_and_stderr():
    # Envoy finds the extension by the type of its typed_config, the name is only a label
    [a] = logs_of({"name": "envoy.access_loggers.stderr", "typed_config": {"@type": STDOUT_T}})
    assert a.path == "/dev/stdout"


def test_file_logger_with_a_text_format_source(tmp_path):
    [a] = logs_of(file_log(str(tmp_path / "access.log"), log_format={
        "text_format_source": {"inline_string": "%REQ(:PATH)% %RESPONSE_CODE%\n"}}))
    assert a.path == str(tmp_path / "access.log")
    assert a.text_format == "%REQ(:PATH)% %RESPONSE_CODE%\n" and a.json_format is None


def test_text_format_source_read_from_a_file(tmp_path):
    fmt = tmp_path / "format.txt"
    fmt.write_text("%PROTOCOL%\n")
    [a] = logs_of(file_log(str(tmp_path / "a.log"),
                           log_format={"text_format_source": {"filename": str(fmt)}}))
    assert a.text_format == "%PROTOCOL%\n"


def test_deprecated_text_format_in_log_format(tmp_path):
    [a] = logs_of(file_log(str(tmp_path / "a.log"), log_format={"text_format": "%DURATION%\n"}))
    assert a.text_format == "%DURATION%\n"


def test_json_format_is_typed_and_keeps_omit_empty_values():
    [a] = logs_of({"name": "envoy.access_loggers.stdout", "typed_config": {
        "@type": STDOUT_T, "log_format": {"json_format": {"code": "%RESPONSE_CODE%",
                                                          "up": {"host": "%UPSTREAM_HOST%"}},
                                          "omit_empty_values": True}}})
    assert a.json_format == {"code": "%RESPONSE_CODE%", "up": {"host": "%UPSTREAM_HOST%"}}
    assert a.typed_json and a.omit_empty_values


def test_deprecated_file_fields_format_json_format_and_typed_json_format(tmp_path):
    path = str(tmp_path / "a.log")
    [text, untyped, typed, empty] = logs_of(
        file_log(path, format="%PROTOCOL%\n"),
        file_log(path, json_format={"p": "%PROTOCOL%"}),
        file_log(path, typed_json_format={"p": "%PROTOCOL%"}),
        file_log(path, format=""))
    assert text.text_format == "%PROTOCOL%\n"
    assert (untyped.json_format, untyped.typed_json) == ({"p": "%PROTOCOL%"}, False)
    assert (typed.json_format, typed.typed_json) == ({"p": "%PROTOCOL%"}, True)
    assert empty.text_format is None        # Envoy: an empty format means the default one


def test_file_path_dev_stdout_is_accepted():
    [a] = logs_of(file_log("/dev/stdout"))
    assert (a.logger, a.path) == ("envoy.access_loggers.file", "/dev/stdout")


def test_several_logs_keep_their_order(tmp_path):
    logs = logs_of({"name": "envoy.access_loggers.stdout"}, file_log(str(tmp_path / "a.log")),
                   {"name": "envoy.access_loggers.stderr"})
    assert [a.path for a in logs] == ["/dev/stdout", str(tmp_path / "a.log"), "/dev/stderr"]


def test_camel_case_field_names(tmp_path):
    [a] = logs_of({"name": "envoy.access_loggers.file", "typedConfig": {
        "@type": FILE_T, "path": str(tmp_path / "a.log"),
        "logFormat": {"jsonFormat": {"c": "%RESPONSE_CODE%"}, "omitEmptyValues": True}}})
    assert a.json_format == {"c": "%RESPONSE_CODE%"} and a.omit_empty_values


def test_default_format_is_envoys():
    assert DEFAULT_FORMAT == (
        '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
        '%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
        '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
        '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n')


# --- refused -----------------------------------------------------------------------------------

def test_filter_is_not_supported_yet():
    e = refusal({"name": "envoy.access_loggers.stdout",
                 "filter": {"status_code_filter": {"comparison": {"op": "GE", "value": {
                     "default_value": 400, "runtime_key": "k"}}}}})
    assert e.path == AL + ".filter"
    assert e.reason == "not supported by cyvoy (access log filters are not supported yet)"


@pytest.mark.parametrize("name", ["envoy.access_loggers.http_grpc", "envoy.access_loggers.tcp_grpc",
                                  "envoy.access_loggers.open_telemetry",
                                  "envoy.access_loggers.fluentd", "envoy.access_loggers.wasm"])
def test_other_envoy_loggers_are_not_supported(name):
    e = refusal({"name": name})
    assert e.path == AL
    assert e.reason.startswith(f"not supported by cyvoy (access logger {name} is not supported")


def test_open_telemetry_by_type_url_is_not_supported():
    e = refusal({"name": "otel", "typed_config": {
        "@type": T + "envoy.extensions.access_loggers.open_telemetry.v3."
                     "OpenTelemetryAccessLogConfig"}})
    assert e.path == AL and "envoy.access_loggers.open_telemetry" in e.reason


def test_unknown_logger_suggests_the_close_name():
    e = refusal({"name": "envoy.access_loggers.stdot"})
    assert e.path == AL + ".name"
    assert "unknown access logger" in e.reason and "envoy.access_loggers.stdout" in e.reason


def test_type_url_of_the_wrong_message():
    e = refusal({"name": "envoy.access_loggers.file", "typed_config": {
        "@type": T + "envoy.extensions.access_loggers.file.v3.Nope", "path": "/tmp/x"}})
    assert e.path == AL + ".typed_config.@type"


def test_file_logger_needs_a_path():
    e = refusal({"name": "envoy.access_loggers.file"})
    assert (e.path, e.reason) == (AL + ".typed_config.path", "missing required field")


def test_file_in_a_missing_directory(tmp_path):
    e = refusal(file_log(str(tmp_path / "nope" / "a.log")))
    assert e.path == AL + ".typed_config.path" and "does not exist" in e.reason


def test_two_formats_at_once(tmp_path):
    e = refusal(file_log(str(tmp_path / "a.log"), format="%PROTOCOL%",
                         log_format={"text_format": "x"}))
    assert e.path == AL + ".typed_config" and "cannot both be set" in e.reason


def test_log_format_needs_one_format():
    e = refusal({"name": "x", "typed_config": {"@type": STDOUT_T, "log_format": {}}})
    assert e.path == AL + ".typed_config.log_format" and "is required" in e.reason


def test_unknown_command_operator_names_the_format():
    e = refusal({"name": "x", "typed_config": {"@type": STDOUT_T, "log_format": {
        "text_format_source": {"inline_string": "%REQ(:PATH)% %NOT_AN_OPERATOR%\n"}}}})
    assert e.path == AL + ".typed_config.log_format.text_format_source"
    assert e.reason == "unknown command operator %NOT_AN_OPERATOR%"


def test_envoy_operator_cyvoy_lacks_is_not_supported_yet(tmp_path):
    e = refusal(file_log(str(tmp_path / "a.log"), format="%DYNAMIC_METADATA(ns:key)%\n"))
    assert e.path == AL + ".typed_config.format"
    assert e.reason == ("not supported by cyvoy (command operator %DYNAMIC_METADATA% is not "
                        "supported yet)")


def test_bad_operator_in_a_nested_json_key():
    e = refusal({"name": "x", "typed_config": {"@type": STDOUT_T, "log_format": {
        "json_format": {"ok": "%PROTOCOL%", "outer": {"inner": "%BYTES_SENT(x)%"}}}}})
    assert e.path == AL + ".typed_config.log_format.json_format.outer.inner"
    assert "does not take a parameter" in e.reason


def test_stray_percent_sign(tmp_path):
    e = refusal(file_log(str(tmp_path / "a.log"), format="100% done\n"))
    assert e.path == AL + ".typed_config.format"
    assert "invalid command operator at position 3" in e.reason and "%%" in e.reason


def test_json_format_must_be_a_mapping():
    e = refusal({"name": "x", "typed_config": {"@type": STDOUT_T, "log_format": {
        "json_format": "%PROTOCOL%"}}})
    assert e.path == AL + ".typed_config.log_format.json_format" and "mapping" in e.reason


def test_empty_text_format_source():
    e = refusal({"name": "x", "typed_config": {"@type": STDOUT_T, "log_format": {
        "text_format_source": {"inline_string": ""}}}})
    assert e.path == AL + ".typed_config.log_format.text_format_source"


def test_formatter_extensions_are_not_supported():
    e = refusal({"name": "x", "typed_config": {"@type": STDOUT_T, "log_format": {
        "text_format": "%PROTOCOL%", "formatters": [{"name": "envoy.formatter.req_without_query",
                                                     "typed_config": {"@type": "x/y"}}]}}})
    assert e.path == AL + ".typed_config.log_format.formatters"


def test_udp_proxy_logging_is_not_supported(tmp_path):
    e = refusal(file_log(str(tmp_path / "a.log"), udp_proxy=True))
    assert e.path == AL + ".typed_config.udp_proxy"


@pytest.mark.parametrize("field, value", [("access_log_flush_interval", "1s"),
                                          ("flush_access_log_on_new_request", True),
                                          ("access_log_options",
                                           {"access_log_flush_interval": "1s"})])
def test_periodic_access_logging_is_not_supported_yet(field, value):
    doc = with_logs({"name": "envoy.access_loggers.stdout"})
    hcm(doc)[field] = value
    with pytest.raises(ConfigError) as info:
        load_dict(doc)
    assert info.value.path == f"{HCM}.{field}" and "not supported yet" in info.value.reason


def test_listener_access_log_points_to_the_connection_manager():
    doc = config()
    listener = doc["static_resources"]["listeners"][0]
    listener["access_log"] = [{"name": "envoy.access_loggers.stdout"}]
    with pytest.raises(ConfigError) as info:
        load_dict(doc)
    assert info.value.path == "static_resources.listeners[0].access_log"
    assert "http_connection_manager" in info.value.reason

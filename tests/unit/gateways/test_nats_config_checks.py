"""NATS gateway tables the configuration refuses at start-up because they could never
work, or would lose events.

Two gateways of one engine must not publish into one NATS stream.

Each NATS publish expects the stream's last message to be the gateway's own
previous one, and a gateway that reopens resumes after the stream's last
message of its journal, whoever published it. Two gateways on one stream
(one for fills, one for the other reports) refused each other's publishes
and then skipped the events the other had published past: events lost, with
both gateways reporting that they had caught up. The configuration refuses
it, naming the key.
"""
import pytest

from gateways import GatewayConfigError, parse_gateway_configs

NATS = {"type": "nats"}


def refused(tables) -> str:
    with pytest.raises(GatewayConfigError) as info:
        parse_gateway_configs(tables)
    return str(info.value)


def test_two_nats_gateways_on_the_default_stream_are_refused():
    message = refused([{**NATS, "name": "fills", "events": ["fill"]},
                       {**NATS, "name": "reports", "events": ["execution_report", "admin"]}])
    assert message.startswith("'gateways[1].stream': stream 'KRONOS_EVENTS' on the same NATS "
                              "servers as gateways[0]"), message


def test_same_server_written_differently_is_the_same_server():
    message = refused([{**NATS, "name": "a", "servers": ["nats://127.0.0.1:4222"]},
                       {**NATS, "name": "b", "servers": ["127.0.0.1", "nats://other:4222"]}])
    assert "'gateways[1].stream'" in message


def test_overlapping_subjects_are_refused_even_in_another_stream():
    message = refused([{**NATS, "name": "a"},
                       {**NATS, "name": "b", "stream": "OTHER", "subject_prefix": "kronos.eu"}])
    assert message.startswith("'gateways[1].subject_prefix': subjects kronos.eu.> "), message


@pytest.mark.parametrize("second", [
    {"stream": "OTHER", "subject_prefix": "kronos2"},           # own stream and subjects
    {"servers": ["nats://elsewhere:4222"]},                      # another cluster
    {"enabled": False},                                          # not built
])
def test_separate_destinations_pass(second):
    configs = parse_gateway_configs([{**NATS, "name": "a"}, {**NATS, "name": "b", **second}])
    assert len(configs) == 2


def test_a_duplicate_window_longer_than_the_streams_max_age_is_refused():
    # NATS refuses to create that stream ("duplicates window can not be larger
    # then max age"): the gateway failed every open, for ever, delivering nothing.
    message = refused([{**NATS, "max_age_s": 300}])     # duplicate_window_s: 600 by default
    assert message.startswith("'gateways[0].duplicate_window_s': 600 s is longer than "
                              "'max_age_s' (300 s)"), message
    [config] = parse_gateway_configs([{**NATS, "max_age_s": 300, "duplicate_window_s": 300}])
    assert config.duplicate_window_s == 300
    [config] = parse_gateway_configs([{**NATS, "duplicate_window_s": 7200}])   # max_age_s 0: none
    assert config.max_age_s == 0

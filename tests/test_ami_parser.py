"""The AMI wire parser: framing, decoding, junk and bounds (pure, no sockets)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from callkpi.testing.fakeami import recorded_events
from ami_listener.manager import MAX_MESSAGE_BYTES, MAX_VALUE_CHARS, AmiParser

EVENT = (b"Event: Newchannel\r\nPrivilege: call,all\r\nCallerIDName: Jos\xc3\xa9 M\xc3\xbcller\r\n"
         b"Uniqueid: 1.1\r\nAccountCode: \r\n\r\n")


def feed_all(parser, chunks):
    messages, junk = [], []
    for chunk in chunks:
        got, bad = parser.feed(chunk)
        messages += got
        junk += bad
    return messages, junk


def test_banner_then_events_split_anywhere_decode_whole():
    stream = b"Asterisk Call Manager/9.0.0\r\n" + EVENT * 2
    for cut in range(1, len(stream)):
        parser = AmiParser()
        messages, junk = feed_all(parser, [stream[:cut], stream[cut:]])
        assert parser.banner == "9.0.0"
        assert junk == []
        assert [m["CallerIDName"] for m in messages] == ["José Müller"] * 2, cut


def test_trailing_empty_header_is_kept():
    (message,), _ = AmiParser().feed(EVENT)
    assert message["AccountCode"] == ""


def test_value_keeps_colons_and_inner_spaces():
    (message,), _ = AmiParser().feed(b"Event: UserEvent\r\nData: a: b  c\r\n\r\n")
    assert message["Data"] == "a: b  c"


def test_junk_lines_are_located_and_the_rest_of_the_message_kept():
    stream = EVENT + b"Event: Hold\r\nthis is junk\r\nUniqueid: 2.2\r\n\r\n"
    messages, junk = AmiParser().feed(stream)
    assert [m["Event"] for m in messages] == ["Newchannel", "Hold"]
    assert messages[1]["Uniqueid"] == "2.2"
    (bad,) = junk
    assert (bad.message_no, bad.offset, bad.sample) == (2, len(EVENT), "this is junk")
    assert "message #2 at byte" in bad.describe("pbx:5038")


def test_message_without_event_or_response_is_junk():
    messages, junk = AmiParser().feed(b"Foo: bar\r\n\r\n" + EVENT)
    assert [m["Event"] for m in messages] == ["Newchannel"]
    assert "no Event or Response" in junk[0].reason


def test_invalid_utf8_becomes_replacement_not_a_crash():
    (message,), _ = AmiParser().feed(b"Event: X\r\nCallerIDName: \xff\xfeA\r\n\r\n")
    assert message["CallerIDName"] == "\ufffd\ufffdA"


def test_huge_value_is_cut_with_a_warning():
    (message,), (bad,) = AmiParser().feed(
        b"Event: UserEvent\r\nData: " + b"x" * (MAX_VALUE_CHARS * 3) + b"\r\n\r\n")
    assert len(message["Data"]) == MAX_VALUE_CHARS
    assert "cut" in bad.reason


def test_endless_message_is_skipped_and_parsing_resumes():
    parser = AmiParser()
    chunk = b"Event: X\r\nData: " + b"y" * 65536
    junk = []
    for _ in range(MAX_MESSAGE_BYTES // 65536 + 4):
        messages, bad = parser.feed(chunk)
        assert messages == []
        junk += bad
        chunk = b"y" * 65536
    assert len(junk) == 1 and "skipped" in junk[0].reason
    assert len(parser._buf) <= 4  # memory stays bounded while skipping
    messages, _ = parser.feed(b"\r\n\r\n" + EVENT)
    assert [m["Event"] for m in messages] == ["Newchannel"]


def recorded_stream() -> bytes:
    return b"".join(block + b"\r\n\r\n" for block in recorded_events())


def test_the_recorded_real_stream_parses_without_junk():
    messages, junk = AmiParser().feed(recorded_stream())
    assert junk == []
    assert len(messages) == 4327
    assert all("Event" in m and not m["Event"].endswith("\r") for m in messages)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4000), max_size=30))
def test_any_chunking_gives_the_same_messages(cuts):
    stream = recorded_stream()[:200_000]
    whole, _ = AmiParser().feed(stream)
    points = sorted({c * 50 for c in cuts if c * 50 < len(stream)})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    assert feed_all(AmiParser(), chunks)[0] == whole

//! Reading an event's envelope (`type`, `id`, the payload and its `sessionID`, and OpenCode 2's
//! `durable.aggregateID` / `durable.seq`) without a JSON parser.
//!
//! The two generations differ only in names: OpenCode 1 puts the payload in `properties`,
//! OpenCode 2 in `data` and adds `durable: {aggregateID, seq, version}` to durable events
//! ([`scan`] and [`scan_v2`]).
//!
//! The router needs only an event's type and session to deliver it, so this module walks the
//! top level of the event object (and the top level of its `properties` object) and skips
//! every other value structurally: strings are jumped over with `memchr`, containers by
//! bracket matching. Nothing is allocated unless an envelope string carries an escape.
//!
//! The result equals what a JSON parser reads on every valid JSON object, whatever the key
//! order, whitespace, escapes and extra fields: when a key repeats, the **last** occurrence
//! wins (as in `JSON.parse` and `serde_json::Value`), and the `properties` range ends at the
//! value's own closing bracket (a field after it is another member, not part of it). The
//! top level is checked strictly (members, colons, commas, nothing after the object); the
//! values it skips are only checked for balanced brackets (counted, not matched by kind) and
//! closed strings, and are validated when a subscriber decodes them.

/// Where an envelope string is: the byte range of its content (between the quotes) in the
/// event text. Copyable: a scan allocates nothing, even for strings with escapes, which are
/// checked during the scan and decoded by [`unescape`] when the event is built (rare).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slice {
    /// Absent, or not a string.
    None,
    /// A string without escapes: its text.
    Range(u32, u32),
    /// A string with (valid) escapes: its raw content, to decode with [`unescape`].
    Escaped(u32, u32),
}

impl Slice {
    #[cfg(test)]
    pub(crate) fn get(self, text: &str) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Slice::None => None,
            Slice::Range(a, b) => text.get(a as usize..b as usize).map(Into::into),
            Slice::Escaped(a, b) => unescape(text, a, b).ok().map(Into::into),
        }
    }
}

/// The decoded content of the JSON string whose content is `text[start..end]`.
pub(crate) fn unescape(text: &str, start: u32, end: u32) -> Scan<String> {
    let (start, end) = (start as usize, end as usize);
    text.get(start.wrapping_sub(1)..end + 1)
        .and_then(|quoted| serde_json::from_str::<String>(quoted).ok())
        .map_or_else(|| fail("invalid escape in a string", start), Ok)
}

/// The envelope of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Envelope {
    /// `type` (always a string; an envelope without one is an error).
    pub(crate) kind: Slice,
    /// `id`, when it is a string.
    pub(crate) id: Slice,
    /// Byte range of the `properties` value, when present.
    pub(crate) props: Option<(u32, u32)>,
    /// `properties.sessionID` (`data.sessionID`), when the payload is an object holding a
    /// string there.
    pub(crate) session: Slice,
    /// `durable.aggregateID` (OpenCode 2), when `durable` is an object holding a string there.
    pub(crate) aggregate: Slice,
    /// `durable.seq` (OpenCode 2), when `durable` is an object holding an integer there that
    /// fits a `u64`.
    pub(crate) seq: Option<u64>,
}

/// Why a text is not an event envelope.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ScanError {
    pub(crate) message: &'static str,
    pub(crate) at: usize,
}

type Scan<T> = Result<T, ScanError>;

fn fail<T>(message: &'static str, at: usize) -> Scan<T> {
    Err(ScanError { message, at })
}

/// A JSON string's content: `start..end` between the quotes, and whether it has escapes.
#[derive(Clone, Copy)]
struct Str {
    start: usize,
    end: usize,
    escaped: bool,
}

/// What an envelope member's value was.
enum Value {
    String(Str),
    Other,
}

/// Reads the envelope of an OpenCode 1 event (payload in `properties`).
#[inline(always)]
pub(crate) fn scan(text: &str) -> Scan<Envelope> {
    if text.len() > u32::MAX as usize {
        return fail("event larger than 4 GiB", 0);
    }
    if let Some(env) = opencode_layout(text)? {
        return Ok(env);
    }
    scan_with(text, "properties", false)
}

/// Reads the envelope of an OpenCode 2 event (payload in `data`, plus `durable`).
#[inline]
pub(crate) fn scan_v2(text: &str) -> Scan<Envelope> {
    if text.len() > u32::MAX as usize {
        return fail("event larger than 4 GiB", 0);
    }
    if let Some(env) = opencode2_layout(text)? {
        return Ok(env);
    }
    scan_with(text, "data", true)
}

/// The general walk: any key order, whitespace, escapes, extra and repeated members.
fn scan_with(text: &str, payload: &str, durable: bool) -> Scan<Envelope> {
    let b = text.as_bytes();
    let mut kind: Option<Value> = None;
    let mut id: Option<Value> = None;
    let mut props: Option<(usize, usize, Option<Value>)> = None;
    let mut durable_seen: Option<Durable> = None;
    let start = skip_ws(b, 0);
    let end = walk_object(b, start, |key, at| {
        let field = match key_bytes(text, key) {
            Some(k) if k == "type" => &mut kind,
            Some(k) if k == "id" => &mut id,
            Some(k) if durable && k == "durable" => {
                let (end, seen) = if b.get(at) == Some(&b'{') {
                    durable_object(text, at)?
                } else {
                    (skip_value(text, at)?, (None, None))
                };
                durable_seen = Some(seen);
                return Ok(end);
            }
            Some(k) if k == payload => {
                let (end, session) = if b.get(at) == Some(&b'{') {
                    properties(text, at)?
                } else {
                    (skip_value(text, at)?, None)
                };
                props = Some((at, end, session));
                return Ok(end);
            }
            _ => return skip_value(text, at),
        };
        let (end, value) = string_or_skip(text, at)?;
        *field = Some(value);
        Ok(end)
    })?;
    if skip_ws(b, end) != b.len() {
        return fail(
            "trailing characters after the event object",
            skip_ws(b, end),
        );
    }
    let kind = match kind {
        Some(Value::String(s)) => slice(text, s)?,
        Some(Value::Other) => return fail("`type` is not a string", 0),
        None => return fail("no `type` field", 0),
    };
    let id = match id {
        Some(Value::String(s)) => slice(text, s)?,
        _ => Slice::None,
    };
    let (props, session) = match props {
        Some((a, b, session)) => (
            Some((a as u32, b as u32)),
            match session {
                Some(Value::String(s)) => slice(text, s)?,
                _ => Slice::None,
            },
        ),
        None => (None, Slice::None),
    };
    let (aggregate, seq) = match durable_seen {
        Some((Some(Value::String(s)), seq)) => (slice(text, s)?, seq),
        Some((_, seq)) => (Slice::None, seq),
        None => (Slice::None, None),
    };
    Ok(Envelope {
        kind,
        id,
        props,
        session,
        aggregate,
        seq,
    })
}

/// `durable.aggregateID` (as read) and `durable.seq`.
type Durable = (Option<Value>, Option<u64>);

/// Reads the `durable` object at `at` (its `{`): the last `aggregateID` (its string value, or
/// "not a string") and the last `seq` (when it is an integer that fits a `u64`).
fn durable_object(text: &str, at: usize) -> Scan<(usize, Durable)> {
    let b = text.as_bytes();
    let mut aggregate = None;
    let mut seq = None;
    let end = walk_object(b, at, |key, at| match key_bytes(text, key) {
        Some(k) if k == "aggregateID" => {
            let (end, value) = string_or_skip(text, at)?;
            aggregate = Some(value);
            Ok(end)
        }
        Some(k) if k == "seq" => {
            let end = skip_value(text, at)?;
            seq = integer(&text[at..end]);
            Ok(end)
        }
        _ => skip_value(text, at),
    })?;
    Ok((end, (aggregate, seq)))
}

/// The value of a JSON number that `serde_json` reads as a `u64` (`Value::as_u64`): plain
/// digits within range (`-0` is a float to it, and `1.0` and `1e2` too).
fn integer(number: &str) -> Option<u64> {
    if number.is_empty() || !number.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

/// The layout OpenCode writes (`JSON.stringify` of `{id, type, properties}`): the prefix is
/// matched as bytes and only the properties are scanned. `None` when the text has another
/// layout (or a member after the properties), which the general walk then reads; nothing
/// before the properties can repeat a key, and nothing may follow them.
#[inline(always)]
fn opencode_layout(text: &str) -> Scan<Option<Envelope>> {
    const ID: &[u8] = b"{\"id\":\"";
    const TYPE: &[u8] = b"\",\"type\":\"";
    const PROPS: &[u8] = b"\",\"properties\":{";
    let b = text.as_bytes();
    let plain = |from: usize| -> Option<usize> {
        let k = quote_or_backslash(b, from)?;
        (b[k] == b'"').then_some(k)
    };
    if !b.starts_with(ID) {
        return Ok(None);
    }
    let id_start = ID.len();
    let Some(id_end) = plain(id_start) else {
        return Ok(None);
    };
    if b.get(id_end..id_end + TYPE.len()) != Some(TYPE) {
        return Ok(None);
    }
    let kind_start = id_end + TYPE.len();
    let Some(kind_end) = plain(kind_start) else {
        return Ok(None);
    };
    if b.get(kind_end..kind_end + PROPS.len()) != Some(PROPS) {
        return Ok(None);
    }
    let props_start = kind_end + PROPS.len() - 1;
    let (props_end, session) = properties(text, props_start)?;
    if skip_ws(b, props_end) >= b.len() || b[skip_ws(b, props_end)] != b'}' {
        return Ok(None);
    }
    let end = skip_ws(b, props_end) + 1;
    if skip_ws(b, end) != b.len() {
        return fail(
            "trailing characters after the event object",
            skip_ws(b, end),
        );
    }
    let session = match session {
        Some(Value::String(s)) => slice(text, s)?,
        _ => Slice::None,
    };
    Ok(Some(Envelope {
        kind: Slice::Range(kind_start as u32, kind_end as u32),
        id: Slice::Range(id_start as u32, id_end as u32),
        props: Some((props_start as u32, props_end as u32)),
        session,
        aggregate: Slice::None,
        seq: None,
    }))
}

/// The layout OpenCode 2 writes (`JSON.stringify` of its event objects):
/// `{"id":"…",["created":N,]["metadata":{…},]"type":"…",["location":{…},]"data":{…}[,"durable":{"aggregateID":"…","seq":N,"version":N}]}`.
/// The fixed parts are matched as bytes, `metadata` and `location` skipped, the data scanned
/// for its session. `None` when the text has another layout (or anything unexpected), which
/// the general walk then reads: no member the fast path accepts can repeat a key.
fn opencode2_layout(text: &str) -> Scan<Option<Envelope>> {
    const ID: &[u8] = b"{\"id\":\"";
    let b = text.as_bytes();
    let plain = |from: usize| -> Option<usize> {
        let k = quote_or_backslash(b, from)?;
        (b[k] == b'"').then_some(k)
    };
    let expect = |at: usize, what: &[u8]| -> Option<usize> {
        (b.get(at..at + what.len())? == what).then_some(at + what.len())
    };
    if !b.starts_with(ID) {
        return Ok(None);
    }
    let id_start = ID.len();
    let Some(id_end) = plain(id_start) else {
        return Ok(None);
    };
    let mut at = id_end + 1;
    if let Some(next) = expect(at, b",\"created\":") {
        let digits = b[next..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Ok(None);
        }
        at = next + digits;
    }
    if let Some(next) = expect(at, b",\"metadata\":{") {
        at = skip_container(text, next - 1, None)?;
    }
    let Some(kind_start) = expect(at, b",\"type\":\"") else {
        return Ok(None);
    };
    let Some(kind_end) = plain(kind_start) else {
        return Ok(None);
    };
    at = kind_end + 1;
    if let Some(next) = expect(at, b",\"location\":{") {
        at = skip_container(text, next - 1, None)?;
    }
    let Some(next) = expect(at, b",\"data\":{") else {
        return Ok(None);
    };
    let props_start = next - 1;
    let (props_end, session) = properties(text, props_start)?;
    at = props_end;
    let mut aggregate = Slice::None;
    let mut seq = None;
    if let Some(next) = expect(at, b",\"durable\":{\"aggregateID\":\"") {
        let Some(agg_end) = plain(next) else {
            return Ok(None);
        };
        let Some(seq_start) = expect(agg_end + 1, b",\"seq\":") else {
            return Ok(None);
        };
        let digits = b[seq_start..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let Some(rest) = expect(seq_start + digits, b",\"version\":") else {
            return Ok(None);
        };
        let version = b[rest..].iter().take_while(|c| c.is_ascii_digit()).count();
        let Some(end) = expect(rest + version, b"}") else {
            return Ok(None);
        };
        if digits == 0 || version == 0 {
            return Ok(None);
        }
        seq = integer(&text[seq_start..seq_start + digits]);
        if seq.is_none() {
            return Ok(None);
        }
        aggregate = Slice::Range(next as u32, agg_end as u32);
        at = end;
    }
    if b.get(at) != Some(&b'}') || at + 1 != b.len() {
        return Ok(None);
    }
    let session = match session {
        Some(Value::String(s)) => slice(text, s)?,
        _ => Slice::None,
    };
    Ok(Some(Envelope {
        kind: Slice::Range(kind_start as u32, kind_end as u32),
        id: Slice::Range(id_start as u32, id_end as u32),
        props: Some((props_start as u32, props_end as u32)),
        session,
        aggregate,
        seq,
    }))
}

/// Skips the `properties` object at `at` (its `{`), remembering its last `sessionID`.
fn properties(text: &str, at: usize) -> Scan<(usize, Option<Value>)> {
    let mut session = None;
    let end = skip_container(text, at, Some(&mut session))?;
    Ok((end, session))
}

/// The key's text for comparison: borrowed when it has no escape; a decoded copy otherwise
/// (rare, and only for keys that could be an envelope key once decoded).
fn key_bytes(text: &str, key: Str) -> Option<std::borrow::Cow<'_, str>> {
    let raw = &text[key.start..key.end];
    if !key.escaped {
        return Some(raw.into());
    }
    serde_json::from_str::<String>(&text[key.start - 1..key.end + 1])
        .ok()
        .map(Into::into)
}

fn slice(text: &str, s: Str) -> Scan<Slice> {
    if !s.escaped {
        return Ok(Slice::Range(s.start as u32, s.end as u32));
    }
    // Checked now (so a bad escape fails the scan, as a parser would), decoded when built.
    unescape(text, s.start as u32, s.end as u32)?;
    Ok(Slice::Escaped(s.start as u32, s.end as u32))
}

fn string_or_skip(text: &str, at: usize) -> Scan<(usize, Value)> {
    let b = text.as_bytes();
    if b.get(at) == Some(&b'"') {
        let s = string(b, at)?;
        Ok((s.end + 1, Value::String(s)))
    } else {
        Ok((skip_value(text, at)?, Value::Other))
    }
}

/// Calls `member(key, value_start)` for each member of the object whose `{` is at `at`;
/// `member` returns where the value ends. Returns the index after the closing `}`.
fn walk_object(
    b: &[u8],
    at: usize,
    mut member: impl FnMut(Str, usize) -> Scan<usize>,
) -> Scan<usize> {
    if b.get(at) != Some(&b'{') {
        return fail("expected `{`", at);
    }
    let mut i = skip_ws(b, at + 1);
    if b.get(i) == Some(&b'}') {
        return Ok(i + 1);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return fail("expected a key", i);
        }
        let key = string(b, i)?;
        i = skip_ws(b, key.end + 1);
        if b.get(i) != Some(&b':') {
            return fail("expected `:`", i);
        }
        i = skip_ws(b, i + 1);
        i = skip_ws(b, member(key, i)?);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Ok(i + 1),
            _ => return fail("expected `,` or `}`", i),
        }
    }
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(c) = b.get(i) {
        if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
            break;
        }
        i += 1;
    }
    i
}

/// The string whose opening quote is at `at`.
#[inline]
fn string(b: &[u8], at: usize) -> Scan<Str> {
    let start = at + 1;
    let mut i = start;
    let mut escaped = false;
    loop {
        let found = quote_or_backslash(b, i).map(|k| k - i);
        let Some(k) = found else {
            return fail("unterminated string", at);
        };
        let at_stop = i + k;
        if b[at_stop] == b'"' {
            return Ok(Str {
                start,
                end: at_stop,
                escaped,
            });
        }
        escaped = true;
        // Skip the backslash and the escaped byte (`\uXXXX` digits need no care).
        i = at_stop + 2;
    }
}

/// The first `"` or `\\` at or after `from`: sixteen bytes at a time with SSE2 on x86-64,
/// then eight (short strings, the usual case, end in the first block; a call to `memchr`
/// costs more than that).
#[inline]
fn quote_or_backslash(b: &[u8], mut from: usize) -> Option<usize> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        use safe_arch::{
            bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, move_mask_i8_m128i,
            set_splat_i8_m128i,
        };
        let quote = set_splat_i8_m128i(b'"' as i8);
        let slash = set_splat_i8_m128i(b'\\' as i8);
        while let Some(block) = b.get(from..from + 16) {
            let Ok(block) = <&[u8; 16]>::try_from(block) else {
                break;
            };
            let v = load_unaligned_m128i(block);
            let hit = bitor_m128i(
                cmp_eq_mask_i8_m128i(v, quote),
                cmp_eq_mask_i8_m128i(v, slash),
            );
            let mask = move_mask_i8_m128i(hit);
            if mask != 0 {
                return Some(from + mask.trailing_zeros() as usize);
            }
            from += 16;
        }
    }
    while let Some(word) = b.get(from..from + 8) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let w = u64::from_le_bytes(bytes);
        let hit =
            zero_bytes(w ^ (u64::from(b'"') * ONES)) | zero_bytes(w ^ (u64::from(b'\\') * ONES));
        if hit != 0 {
            return Some(from + hit.trailing_zeros() as usize / 8);
        }
        from += 8;
    }
    b.get(from..)?
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|k| from + k)
}

/// Skips the value starting at `at`; returns the index after it.
fn skip_value(text: &str, at: usize) -> Scan<usize> {
    let b = text.as_bytes();
    match b.get(at) {
        Some(b'"') => Ok(string(b, at)?.end + 1),
        Some(b'{' | b'[') => skip_container(text, at, None),
        Some(b't') => literal(b, at, b"true"),
        Some(b'f') => literal(b, at, b"false"),
        Some(b'n') => literal(b, at, b"null"),
        Some(b'-' | b'0'..=b'9') => {
            let mut i = at + 1;
            while let Some(c) = b.get(i) {
                if !matches!(c, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                    break;
                }
                i += 1;
            }
            Ok(i)
        }
        _ => fail("expected a value", at),
    }
}

fn literal(b: &[u8], at: usize, word: &[u8]) -> Scan<usize> {
    if b.get(at..at + word.len()) == Some(word) {
        Ok(at + word.len())
    } else {
        fail("expected a value", at)
    }
}

/// Skips the object or array at `at` by bracket matching, strings excluded. With `session`,
/// records the last top-level `sessionID` member of the object (its string value, or "not a
/// string").
///
/// The text is classified 64 bytes at a time into bit masks as simdjson does (with SSE2 on
/// x86-64, word-parallel SWAR elsewhere: [`Masks::of`]): quotes, backslashes and brackets become 64-bit masks, escaped quotes are
/// removed with the odd-backslash-run carry trick, and a prefix XOR of the quotes gives the
/// in-string mask. A byte-by-byte scan of JSON this dense mispredicts a branch at every
/// token; here only brackets (and, with `session`, the strings directly inside the object)
/// are visited one by one. Brackets are matched by count, not by kind.
///
/// Most events hold no backslash at all (one `memchr` tells): their blocks are classified
/// without the backslash mask and the escape carry.
fn skip_container(text: &str, at: usize, session: Option<&mut Option<Value>>) -> Scan<usize> {
    if memchr::memchr(b'\\', text.as_bytes().get(at..).unwrap_or_default()).is_some() {
        skip_blocks::<true>(text, at, session)
    } else {
        skip_blocks::<false>(text, at, session)
    }
}

/// [`skip_container`]'s block loop; `ESC`: the text from `at` on may hold backslashes.
#[inline(always)]
fn skip_blocks<const ESC: bool>(
    text: &str,
    at: usize,
    mut session: Option<&mut Option<Value>>,
) -> Scan<usize> {
    let b = text.as_bytes();
    let mut depth: u64 = 0;
    let mut in_string: u64 = 0;
    let mut odd_backslash: u64 = 0;
    let mut pos = at;
    while pos < b.len() {
        let m = match b.get(pos..pos + 64) {
            Some(block) => Masks::of::<ESC>(block),
            // The last, partial block: the text's last 64 bytes, shifted (no copy).
            None if b.len() >= 64 => {
                Masks::of::<ESC>(&b[b.len() - 64..]).shifted(pos + 64 - b.len())
            }
            None => {
                let mut block = [b' '; 64];
                block[..b.len() - pos].copy_from_slice(&b[pos..]);
                Masks::of::<ESC>(&block)
            }
        };
        let quotes = if ESC && (m.backslash != 0 || odd_backslash != 0) {
            m.quote & !odd_backslash_ends(m.backslash, &mut odd_backslash)
        } else {
            m.quote
        };
        let inside = prefix_xor(quotes) ^ in_string;
        in_string = ((inside as i64) >> 63) as u64;
        let opens = m.open & !inside;
        let mut brackets = opens | m.close & !inside;
        // Opening quotes of strings directly inside the tracked object (depth 1).
        let starts = if session.is_some() {
            quotes & inside
        } else {
            0
        };
        let mut members: u64 = 0;
        let mut from = 0u32;
        let mut end = None;
        // Branch-free per bracket (its kind is data): only the end of the container branches.
        // (A block holds few brackets; counting them with `count_ones` would cost more on
        // x86-64's baseline, which has no `popcnt`.)
        while brackets != 0 {
            let bit = brackets.trailing_zeros();
            members |= starts & span(from, bit) & all_if(depth == 1);
            depth = (depth + 2 * ((opens >> bit) & 1)).wrapping_sub(1);
            if depth == 0 {
                end = Some(pos + bit as usize + 1);
                break;
            }
            from = bit + 1;
            brackets &= brackets - 1;
        }
        if end.is_none() {
            members |= starts & span(from, 64) & all_if(depth == 1);
        }
        if let Some(slot) = session.as_deref_mut() {
            while members != 0 {
                let bit = members.trailing_zeros();
                members &= members - 1;
                // The member's closing quote and escapes, when they are in this block.
                let later = quotes & !span(0, bit + 1);
                let key = if later != 0 {
                    let close = later.trailing_zeros();
                    Some((close, ESC && m.backslash & span(bit + 1, close) != 0))
                } else {
                    None
                };
                let at = pos + bit as usize;
                // Most members are not `sessionID`: an unescaped string closing in this block
                // is rejected here unless it is 9 bytes long and starts like it.
                if let Some((close, false)) = key
                    && (close != bit + 10 || text.as_bytes().get(at + 1) != Some(&b's'))
                {
                    continue;
                }
                session_member(text, at, key, slot)?;
            }
        }
        if let Some(end) = end {
            return Ok(end);
        }
        pos += 64;
    }
    fail("unterminated object or array", at)
}

/// The string at `at` is directly inside the tracked object: when it is the key
/// `sessionID`, records its value. `block_end` is the bit of its closing quote and whether
/// it has escapes, when the block's masks tell.
fn session_member(
    text: &str,
    at: usize,
    block_end: Option<(u32, bool)>,
    slot: &mut Option<Value>,
) -> Scan<()> {
    const KEY: &[u8] = b"sessionID";
    let b = text.as_bytes();
    let key = match block_end {
        // Unescaped: only a 9-byte `sessionID` matches, compared in place.
        Some((_, false)) if b.get(at + 1..at + 1 + KEY.len()) != Some(KEY) => return Ok(()),
        Some((_, false)) if b.get(at + 1 + KEY.len()) != Some(&b'"') => return Ok(()),
        Some((_, false)) => Str {
            start: at + 1,
            end: at + 1 + KEY.len(),
            escaped: false,
        },
        _ => string(b, at)?,
    };
    if !is_session_key(text, key) {
        return Ok(());
    }
    let colon = skip_ws(b, key.end + 1);
    if b.get(colon) != Some(&b':') {
        // A string value, not a key.
        return Ok(());
    }
    let (_, value) = string_or_skip(text, skip_ws(b, colon + 1))?;
    *slot = Some(value);
    Ok(())
}

/// All ones when `cond` holds, else zero.
#[inline]
fn all_if(cond: bool) -> u64 {
    0u64.wrapping_sub(u64::from(cond))
}

/// Bits `from..to` (`to` ≤ 64).
fn span(from: u32, to: u32) -> u64 {
    let upper = if to >= 64 { u64::MAX } else { (1u64 << to) - 1 };
    let lower = if from >= 64 {
        u64::MAX
    } else {
        (1u64 << from) - 1
    };
    upper & !lower
}

/// Bit masks of one 64-byte block: bit `i` is byte `i`.
struct Masks {
    quote: u64,
    /// Zero when the block was classified without backslashes.
    backslash: u64,
    /// `{` or `[`.
    open: u64,
    /// `}` or `]`.
    close: u64,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

impl Masks {
    /// `block` holds 64 bytes; `ESC`: classify backslashes too.
    ///
    /// On x86-64: 16 bytes at a time with SSE2 (part of the baseline: no detection; through
    /// `safe_arch`, as this crate forbids `unsafe`), a comparison and a `movemask` per class.
    /// Elsewhere: [`Masks::of_words`].
    #[inline(always)]
    fn of<const ESC: bool>(block: &[u8]) -> Masks {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        {
            Masks::of_sse2::<ESC>(block)
        }
        #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
        {
            Masks::of_words::<ESC>(block)
        }
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[inline(always)]
    fn of_sse2<const ESC: bool>(block: &[u8]) -> Masks {
        use safe_arch::{
            bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, move_mask_i8_m128i,
            set_splat_i8_m128i,
        };
        let mut m = Masks {
            quote: 0,
            backslash: 0,
            open: 0,
            close: 0,
        };
        let quote = set_splat_i8_m128i(b'"' as i8);
        let backslash = set_splat_i8_m128i(b'\\' as i8);
        // `[` and `{` differ only in bit 5 (0x20), as do `]` and `}`; no other byte folds
        // to 0x7B or 0x7D.
        let fold = set_splat_i8_m128i(0x20);
        let open = set_splat_i8_m128i(0x7B);
        let close = set_splat_i8_m128i(0x7D);
        for (k, chunk) in block.chunks_exact(16).take(4).enumerate() {
            let Ok(chunk) = <&[u8; 16]>::try_from(chunk) else {
                break;
            };
            let v = load_unaligned_m128i(chunk);
            let f = bitor_m128i(v, fold);
            let bits = |x| u64::from(move_mask_i8_m128i(x) as u16);
            let shift = 16 * k;
            m.quote |= bits(cmp_eq_mask_i8_m128i(v, quote)) << shift;
            m.open |= bits(cmp_eq_mask_i8_m128i(f, open)) << shift;
            m.close |= bits(cmp_eq_mask_i8_m128i(f, close)) << shift;
            if ESC {
                m.backslash |= bits(cmp_eq_mask_i8_m128i(v, backslash)) << shift;
            }
        }
        m
    }

    /// [`Masks::of`] eight bytes at a time in general-purpose registers.
    #[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
    #[inline(always)]
    fn of_words<const ESC: bool>(block: &[u8]) -> Masks {
        let mut m = Masks {
            quote: 0,
            backslash: 0,
            open: 0,
            close: 0,
        };
        for (k, word) in block.chunks_exact(8).enumerate() {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            let w = u64::from_le_bytes(bytes);
            // `[` and `{` differ only in bit 5 (0x20), as do `]` and `}`: folded, a bracket
            // is 0x7B or 0x7D. `(f ^ 0x7B) & !0x06` is zero for 0x79, 0x7B, 0x7D and 0x7F,
            // of which only the brackets have bits 1 and 2 different; bit 1 set is `{`.
            let f = w | (0x20 * ONES);
            let bracket = zero_bytes((f ^ (0x7B * ONES)) & !(0x06 * ONES)) & ((f ^ (f >> 1)) << 6);
            let open = bracket & (f << 6);
            let shift = 8 * k;
            m.quote |= pack(zero_bytes(w ^ (u64::from(b'"') * ONES))) << shift;
            m.open |= pack(open) << shift;
            m.close |= pack(bracket & !open) << shift;
            if ESC {
                m.backslash |= pack(zero_bytes(w ^ (u64::from(b'\\') * ONES))) << shift;
            }
        }
        m
    }
}

impl Masks {
    /// The masks of the block starting `by` bytes later (the bytes past the end read as
    /// nothing).
    fn shifted(self, by: usize) -> Masks {
        Masks {
            quote: self.quote >> by,
            backslash: self.backslash >> by,
            open: self.open >> by,
            close: self.close >> by,
        }
    }
}

/// The high bit of each byte of `t` that is zero (exact: no borrow crosses bytes).
#[inline(always)]
fn zero_bytes(t: u64) -> u64 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    !(((t & LOW7).wrapping_add(LOW7)) | t) & HIGH
}

/// Packs the high bit of each byte into the low 8 bits (byte `i` to bit `i`): the product
/// puts byte `i`'s bit 7 at bit `56 + i`, and no two partial products share a bit.
#[inline]
fn pack(high_bits: u64) -> u64 {
    high_bits.wrapping_mul(0x0002_0408_1020_4081) >> 56
}

/// Each bit becomes the XOR of itself and every lower bit (in-string mask from quotes).
#[inline]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// The bytes escaped by an odd-length run of backslashes (simdjson's
/// `find_odd_backslash_sequences`); `carry` tells whether the previous block ended in one.
#[inline]
fn odd_backslash_ends(backslash: u64, carry: &mut u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    const ODD: u64 = !EVEN;
    let starts = backslash & !(backslash << 1);
    let even_start_mask = EVEN ^ *carry;
    let even_starts = starts & even_start_mask;
    let odd_starts = starts & !even_start_mask;
    let even_carries = backslash.wrapping_add(even_starts);
    let (mut odd_carries, overflow) = backslash.overflowing_add(odd_starts);
    odd_carries |= *carry;
    *carry = u64::from(overflow);
    let even_carry_ends = even_carries & !backslash;
    let odd_carry_ends = odd_carries & !backslash;
    (even_carry_ends & ODD) | (odd_carry_ends & EVEN)
}

fn is_session_key(text: &str, s: Str) -> bool {
    const KEY: &str = "sessionID";
    if s.escaped {
        key_bytes(text, s).is_some_and(|k| k == KEY)
    } else {
        &text.as_bytes()[s.start..s.end] == KEY.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(
        text: &str,
    ) -> (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) {
        let e = scan(text).unwrap();
        (
            e.kind.get(text).map(std::borrow::Cow::into_owned),
            e.id.get(text).map(std::borrow::Cow::into_owned),
            e.props
                .map(|(a, b)| text[a as usize..b as usize].to_owned()),
            e.session.get(text).map(std::borrow::Cow::into_owned),
        )
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn a_field_after_the_properties_is_not_part_of_them() {
        let (kind, id, props, session) = env(
            r#"{"id":"evt_1","type":"session.idle","properties":{"sessionID":"ses_a"},"extra":{"sessionID":"ses_b"}}"#,
        );
        assert_eq!(kind, s("session.idle"));
        assert_eq!(id, s("evt_1"));
        assert_eq!(props, s(r#"{"sessionID":"ses_a"}"#));
        assert_eq!(session, s("ses_a"));
    }

    #[test]
    fn escapes_are_decoded() {
        let (kind, id, _, session) = env(
            r#"{"id":"evt_\"1","type":"session.idl\u0065","properties":{"session\u0049D":"ses_\u0041"}}"#,
        );
        assert_eq!(kind, s("session.idle"));
        assert_eq!(id, s("evt_\"1"));
        assert_eq!(session, s("ses_A"));
    }

    #[test]
    fn the_last_duplicate_wins() {
        let (kind, id, props, session) = env(
            r#"{"type":"a","id":"1","properties":{"sessionID":"x","sessionID":"y"},"type":"b","properties":{"sessionID":"z"},"id":2}"#,
        );
        assert_eq!(kind, s("b"));
        assert_eq!(id, None, "the last id is not a string");
        assert_eq!(props, s(r#"{"sessionID":"z"}"#));
        assert_eq!(session, s("z"));
    }

    #[test]
    fn braces_and_quotes_inside_strings_do_not_count() {
        let (_, _, props, session) = env(
            r#" { "properties" : { "a" : "}\"{]" , "b":[{"c":"\\"}], "sessionID" : "s" } , "type" : "t" } "#,
        );
        assert_eq!(
            props,
            s(r#"{ "a" : "}\"{]" , "b":[{"c":"\\"}], "sessionID" : "s" }"#)
        );
        assert_eq!(session, s("s"));
    }

    #[test]
    fn block_masks_equal_a_byte_by_byte_classification() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let block: Vec<u8> = (0..64)
                .map(|_| {
                    let alphabet = b"\"\\{}[]ab ,:z]^~\x7f\x80\xff;yY_\x5f\x79\x7a\x7c\x7e\x7b";
                    alphabet[rng.usize(..alphabet.len())]
                })
                .collect();
            let m = Masks::of::<true>(&block);
            let plain = Masks::of::<false>(&block);
            assert_eq!(
                (plain.quote, plain.open, plain.close, plain.backslash),
                (m.quote, m.open, m.close, 0)
            );
            let words = Masks::of_words::<true>(&block);
            assert_eq!(
                (words.quote, words.open, words.close, words.backslash),
                (m.quote, m.open, m.close, m.backslash)
            );
            let mask = |f: &dyn Fn(u8) -> bool| {
                block
                    .iter()
                    .enumerate()
                    .fold(0u64, |acc, (i, &c)| acc | (u64::from(f(c)) << i))
            };
            assert_eq!(m.quote, mask(&|c| c == b'"'));
            assert_eq!(m.backslash, mask(&|c| c == b'\\'));
            assert_eq!(m.open, mask(&|c| c == b'{' || c == b'['));
            assert_eq!(m.close, mask(&|c| c == b'}' || c == b']'));
        }
    }

    #[test]
    fn escaped_quotes_across_block_boundaries() {
        for pad in 0..70 {
            for slashes in 0..5 {
                let text = format!(
                    r#"{{"type":"t","properties":{{"a":"{}{}\"","sessionID":"s"}}}}"#,
                    "x".repeat(pad),
                    "\\".repeat(slashes)
                );
                if serde_json::from_str::<serde_json::Value>(&text).is_err() {
                    assert!(scan(&text).is_err() || slashes % 2 == 1, "{text}");
                    continue;
                }
                let (_, _, _, session) = env(&text);
                assert_eq!(session, s("s"), "{text}");
            }
        }
    }

    #[test]
    fn every_captured_v2_event_takes_the_fast_path() {
        for text in crate::v2::tests_support::samples() {
            let fast = opencode2_layout(&text).unwrap();
            assert_eq!(
                fast,
                Some(scan_with(&text, "data", true).unwrap()),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        for bad in [
            "",
            "not json",
            "[]",
            r#"{"type":1}"#,
            r#"{"id":"x"}"#,
            r#"{"type":"x",}"#,
            r#"{"type":"x"} x"#,
            r#"{"type":"x","properties":{"a":"}"#,
            r#"{"type" "x"}"#,
            r#"{"type":"x" "id":"y"}"#,
            r#"{"type":"x","properties":nul}"#,
            r#"{"type":"\ud800"}"#,
        ] {
            assert!(scan(bad).is_err(), "{bad}");
        }
    }
}

//! Answers DNS queries from the zone, as Weave Net's DNS server does (`nameserver/dns.go` with
//! miekg/dns 1.0.4's server and `ServeMux`; spec §5.5): query bytes in, an [`Action`] out.
//!
//! * A question under the domain, or any single-label name (`foo.`, which gets the domain
//!   appended), is local: exactly one question, else NXDOMAIN; no live entry → NXDOMAIN
//!   (RA); entries but a type other than A → NOERROR with no answer (AA, RA); A → one record
//!   per entry, owner the question name as asked, TTL [`Responder::ttl`], shuffled (AA, RA).
//! * A question under `in-addr.arpa.` is reverse: one PTR question, else NXDOMAIN; a name that
//!   is no IPv4 address → NXDOMAIN; the first live entry with that address → its hostname;
//!   none → [`Action::Forward`].
//! * Anything else, including every DS question (the mux hands those to the root handler),
//!   is [`Action::Forward`]: the caller asks the upstream servers ([`relay_upstream`],
//!   [`server_failure`]).
//! * Truncation (UDP only, and only with more than one answer): the limit is 512 bytes or the
//!   request's EDNS0 UDP size (as sent, even below 512: Weave does not raise it), the answer the
//!   largest prefix of the records that fits, TC set when any was left out. No OPT record is
//!   added. So no UDP answer is larger than Weave's: ours compresses names (Weave's does not)
//!   and is cut at the same limit.
//! * A response (QR set) is dropped; bytes too short for a header are dropped; a header
//!   followed by malformed bytes gets FORMERR (miekg's `SetRcodeFormatError`); no question at
//!   all gets SERVFAIL (miekg's `HandleFailed`). Question and record counts larger than what
//!   follows are taken as what follows, as miekg does.
//!
//! Messages are parsed and built with `hickory-proto` (default features off: only its message
//! types and wire codec, no resolver or runtime) rather than by hand: name compression, label
//! rules and truncation on encode are its, well fuzzed. Two things are read here by hand: only
//! the first question is kept (later ones are parsed and dropped, so a query's memory does not
//! grow with its question count), and the record sections are walked without decoding their
//! data (a query needs none of it, and hickory would raise an OPT size below 512 to 512),
//! checking their framing and reading the last OPT record's UDP size.

use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use rand::seq::SliceRandom;
use rand::Rng;

use super::zone::Zone;

/// Weave's default answer TTL (`--dns-ttl`), seconds.
pub const DEFAULT_TTL: u32 = 1;

/// Largest UDP answer without EDNS0 (Weave's `minUDPSize`).
pub const UDP_LIMIT: usize = 512;

/// Largest DNS message (TCP frames it with a 16-bit length).
pub const MAX_MESSAGE: usize = u16::MAX as usize;

/// Length of a DNS header.
const HEADER_LEN: usize = 12;

/// The reverse-lookup zone.
const REVERSE: [&[u8]; 2] = [b"in-addr", b"arpa"];

/// What a query came over: UDP answers are truncated, TCP ones are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams: answers cut at 512 bytes or the query's EDNS0 size.
    Udp,
    /// A stream: answers up to [`MAX_MESSAGE`].
    Tcp,
}

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes back.
    Answer(Vec<u8>),
    /// Not ours to answer: ask the upstream servers, then [`relay_upstream`] their answer or
    /// send [`server_failure`] if none answers.
    Forward,
    /// Send nothing.
    Drop,
}

/// Answers queries from a [`Zone`]; holds only the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Responder {
    /// TTL of local answers, seconds (`--dns-ttl`).
    pub ttl: u32,
}

impl Default for Responder {
    fn default() -> Self {
        Self { ttl: DEFAULT_TTL }
    }
}

/// A query, as far as answering needs it.
struct Parsed {
    header: Header,
    /// The first question, if any.
    question: Option<Query>,
    /// How many questions there were (after miekg's count-lie rule).
    questions: usize,
    /// The UDP size of the last OPT record, as sent.
    edns_size: Option<u16>,
    /// Where the first question ends in the query, when its name is written out whole (no
    /// compression pointer) right after the header: the answer can then copy it as it is.
    plain_question_end: Option<usize>,
}

/// Why a query could not be parsed.
enum Malformed {
    /// Not even a header: nobody to answer.
    NoHeader,
    /// A header, then bytes that do not parse.
    Body(Header),
}

fn parse(query: &[u8]) -> Result<Parsed, Malformed> {
    let mut d = BinDecoder::new(query);
    let header = Header::read(&mut d).map_err(|_| Malformed::NoHeader)?;
    let mut question = None;
    let mut questions = 0;
    let mut plain_question_end = None;
    for _ in 0..header.query_count() {
        if d.is_empty() {
            break;
        }
        let q = Query::read(&mut d).map_err(|_| Malformed::Body(header))?;
        questions += 1;
        if question.is_none() {
            question = Some(q);
            plain_question_end = plain_name_end(query, HEADER_LEN)
                .filter(|&end| end + 4 == d.index())
                .map(|_| d.index());
        }
    }
    let records = usize::from(header.answer_count())
        + usize::from(header.name_server_count())
        + usize::from(header.additional_count());
    let edns_size = walk_records(query, d.index(), records).ok_or(Malformed::Body(header))?;
    Ok(Parsed {
        header,
        question,
        questions,
        edns_size,
        plain_question_end,
    })
}

/// The offset just past the name at `off` if it is all labels (no compression pointer).
fn plain_name_end(b: &[u8], mut off: usize) -> Option<usize> {
    loop {
        let len = *b.get(off)?;
        match len {
            0 => return Some(off + 1),
            1..=63 => off = off.checked_add(1 + usize::from(len))?,
            _ => return None,
        }
    }
}

/// Walks `count` resource records from `off` (stopping early at the end of the input),
/// checking their framing; returns the UDP size of the last OPT record, or `None` inside the
/// `Option` if there is none. `None` if a record is malformed.
fn walk_records(b: &[u8], mut off: usize, count: usize) -> Option<Option<u16>> {
    let mut edns = None;
    for _ in 0..count {
        if off >= b.len() {
            break;
        }
        off = skip_name(b, off)?;
        let fixed = b.get(off..off.checked_add(10)?)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let class = u16::from_be_bytes([fixed[2], fixed[3]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        off = off.checked_add(10 + rdlen)?;
        if off > b.len() {
            return None;
        }
        if rtype == u16::from(RecordType::OPT) {
            edns = Some(class);
        }
    }
    Some(edns)
}

/// The offset just past the name at `off` (labels, ending in the root or a pointer).
fn skip_name(b: &[u8], mut off: usize) -> Option<usize> {
    loop {
        let len = *b.get(off)?;
        match len & 0xc0 {
            0x00 if len == 0 => return Some(off + 1),
            0x00 => off = off.checked_add(1 + usize::from(len))?,
            0xc0 => {
                b.get(off + 1)?;
                return Some(off + 2);
            }
            _ => return None,
        }
    }
}

/// A question being answered, with what answering it needs.
#[derive(Clone, Copy)]
struct Asked<'a> {
    zone: &'a Zone,
    p: &'a Parsed,
    q: &'a Query,
    name: &'a [&'a [u8]],
    transport: Transport,
    /// The query's bytes, when a plain A answer may be written directly from them.
    query: Option<&'a [u8]>,
}

/// Which of the server's handlers a question goes to (miekg's `ServeMux.match`: the longest
/// registered zone the name is in; DS questions always end at the root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handler {
    Local,
    Reverse,
    Recursive,
}

fn labels(name: &Name) -> Vec<&[u8]> {
    name.iter().collect()
}

/// Whether `name` ends with the labels `zone`, ignoring case.
fn in_zone(name: &[&[u8]], zone: &[&[u8]]) -> bool {
    name.len() >= zone.len()
        && name[name.len() - zone.len()..]
            .iter()
            .zip(zone)
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
}

fn handler(name: &[&[u8]], qtype: RecordType, domain: &[&[u8]]) -> Handler {
    if qtype == RecordType::DS {
        return Handler::Recursive;
    }
    let local = !domain.is_empty() && in_zone(name, domain);
    let reverse = in_zone(name, &REVERSE);
    match (local, reverse) {
        (true, true) if domain.len() >= REVERSE.len() => Handler::Local,
        (_, true) => Handler::Reverse,
        (true, false) => Handler::Local,
        (false, false) => Handler::Recursive,
    }
}

/// Whether a label can be written as plain text: a dot, a backslash, a space or a byte
/// outside printable ASCII would be escaped in DNS text (Weave compares that escaped text), and
/// no stored name has one.
fn plain(label: &[u8]) -> bool {
    label
        .iter()
        .all(|&b| (0x21..=0x7e).contains(&b) && b != b'.' && b != b'\\')
}

/// `labels` as fully qualified text, lower case ("." for the root); `None` if a label is not
/// [`plain`].
fn text(labels: &[&[u8]]) -> Option<String> {
    let mut s = String::new();
    for l in labels {
        if !plain(l) {
            return None;
        }
        s.push_str(&String::from_utf8_lossy(l).to_ascii_lowercase());
        s.push('.');
    }
    if s.is_empty() {
        s.push('.');
    }
    Some(s)
}

impl Responder {
    /// A responder whose local answers carry `ttl` seconds.
    pub fn new(ttl: u32) -> Self {
        Self { ttl }
    }

    /// What to do with `query`, which arrived over `transport`; `rng` shuffles the answers.
    pub fn answer<R: Rng + ?Sized>(
        &self,
        zone: &Zone,
        query: &[u8],
        transport: Transport,
        rng: &mut R,
    ) -> Action {
        self.answer_with(zone, query, transport, rng, true)
    }

    /// [`Self::answer`], with or without the direct encoding of plain A answers (the tests
    /// check that both give the same bytes).
    pub(super) fn answer_with<R: Rng + ?Sized>(
        &self,
        zone: &Zone,
        query: &[u8],
        transport: Transport,
        rng: &mut R,
        direct: bool,
    ) -> Action {
        let p = match parse(query) {
            Ok(p) => p,
            Err(Malformed::NoHeader) => return Action::Drop,
            Err(Malformed::Body(h)) => return encode_or_drop(&format_error(&h), MAX_MESSAGE),
        };
        if p.header.message_type() == MessageType::Response {
            return Action::Drop;
        }
        let Some(q) = &p.question else {
            // miekg's HandleFailed: SERVFAIL, no RA.
            return encode_or_drop(&reply(&p, ResponseCode::ServFail), MAX_MESSAGE);
        };
        let name = labels(q.name());
        let domain: Vec<&[u8]> = zone
            .domain()
            .split('.')
            .filter(|l| !l.is_empty())
            .map(str::as_bytes)
            .collect();
        let asked = Asked {
            zone,
            p: &p,
            q,
            name: &name,
            transport,
            query: direct.then_some(query),
        };
        match handler(&name, q.query_type(), &domain) {
            Handler::Local => self.local(&asked, rng),
            Handler::Reverse => self.reverse(&asked),
            Handler::Recursive => {
                if p.questions == 1 && name.len() <= 1 {
                    return self.local(&asked, rng);
                }
                Action::Forward
            }
        }
    }

    fn local<R: Rng + ?Sized>(&self, asked: &Asked<'_>, rng: &mut R) -> Action {
        let Asked {
            zone,
            p,
            q,
            name,
            transport,
            query,
        } = *asked;
        if p.questions != 1 {
            return name_error(p);
        }
        let addrs = match text(name) {
            Some(mut hostname) => {
                if name.len() <= 1 {
                    // Weave appends the domain to "foo." (and to "." too).
                    hostname.push_str(zone.domain());
                }
                zone.lookup(&hostname)
            }
            None => Vec::new(),
        };
        if addrs.is_empty() {
            return name_error(p);
        }
        if q.query_type() == RecordType::A {
            if let Some(b) = query.and_then(|b| self.direct_a(b, p, addrs.clone(), transport, rng))
            {
                return Action::Answer(b);
            }
        }
        let mut m = reply(p, ResponseCode::NoError);
        m.set_recursion_available(true).set_authoritative(true);
        if q.query_type() != RecordType::A {
            return encode_or_drop(&m, MAX_MESSAGE);
        }
        let mut answers: Vec<Record> = addrs
            .into_iter()
            .map(|a| Record::from_rdata(q.name().clone(), self.ttl, RData::A(A(a))))
            .collect();
        answers.shuffle(rng);
        let many = answers.len() > 1;
        m.insert_answers(answers);
        self.respond(m, many, p, transport)
    }

    /// The common answer written directly, byte for byte what the general path writes (the
    /// tests compare the two): the header, the question copied from the query, and one A
    /// record per address whose owner points at the question's name. hickory's message
    /// building and encoding was most of the user-space time of a query; this skips it.
    /// `None` (take the general path) for anything else: another opcode, a compressed or
    /// missing question name, or an answer that would need truncating.
    fn direct_a<R: Rng + ?Sized>(
        &self,
        query: &[u8],
        p: &Parsed,
        mut addrs: Vec<Ipv4Addr>,
        transport: Transport,
        rng: &mut R,
    ) -> Option<Vec<u8>> {
        let qend = p.plain_question_end?;
        if p.header.op_code() != OpCode::Query {
            return None;
        }
        let question = query.get(HEADER_LEN..qend)?;
        let len = HEADER_LEN + question.len() + 16 * addrs.len();
        let limit = match transport {
            Transport::Udp if addrs.len() > 1 => p.edns_size.map_or(UDP_LIMIT, usize::from),
            _ => MAX_MESSAGE,
        };
        if len > limit || len > MAX_MESSAGE {
            return None;
        }
        addrs.shuffle(rng);
        let mut b = Vec::with_capacity(len);
        b.extend_from_slice(&p.header.id().to_be_bytes());
        // QR, opcode QUERY, AA, RD as asked; RA, CD as asked; NOERROR.
        b.push(0x84 | u8::from(p.header.recursion_desired()));
        b.push(
            0x80 | if p.header.checking_disabled() {
                0x10
            } else {
                0
            },
        );
        b.extend_from_slice(&1u16.to_be_bytes());
        b.extend_from_slice(&u16::try_from(addrs.len()).ok()?.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(question);
        for a in addrs {
            // Owner: a pointer to the question's name at offset 12; type A, class IN.
            b.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
            b.extend_from_slice(&self.ttl.to_be_bytes());
            b.extend_from_slice(&[0, 4]);
            b.extend_from_slice(&a.octets());
        }
        Some(b)
    }

    fn reverse(&self, asked: &Asked<'_>) -> Action {
        let Asked {
            zone,
            p,
            q,
            name,
            transport,
            ..
        } = *asked;
        if p.questions != 1 || q.query_type() != RecordType::PTR {
            return name_error(p);
        }
        let Some(addr) = reverse_addr(name) else {
            return name_error(p);
        };
        let Some(hostname) = zone.reverse_lookup(addr) else {
            return Action::Forward;
        };
        // Stored names are checked on the way in; one that still does not make a DNS name
        // cannot be written, and Weave's server sends nothing then either.
        let Ok(target) = Name::from_ascii(hostname) else {
            return Action::Drop;
        };
        let mut m = reply(p, ResponseCode::NoError);
        m.set_recursion_available(true).set_authoritative(true);
        m.add_answer(Record::from_rdata(
            q.name().clone(),
            self.ttl,
            RData::PTR(PTR(target)),
        ));
        self.respond(m, false, p, transport)
    }

    /// Encodes `m`, truncating its answers to the transport's limit when there is more than
    /// one (Weave's `makeResponse`).
    fn respond(&self, mut m: Message, many: bool, p: &Parsed, transport: Transport) -> Action {
        if !many || transport == Transport::Tcp {
            return encode_or_drop(&m, MAX_MESSAGE);
        }
        let limit = p.edns_size.map_or(UDP_LIMIT, usize::from);
        if let Some(b) = encode(&m, limit) {
            return Action::Answer(b);
        }
        // Not even the question fits the requester's limit: no answers, TC, sent anyway.
        m.take_answers();
        m.set_truncated(true);
        encode_or_drop(&m, MAX_MESSAGE)
    }
}

/// The address a reverse name stands for: the labels before `in-addr.arpa.` read as an IP
/// address (Go's `net.ParseIP`: an IPv6 text counts, as its IPv4-mapped address or 0), byte
/// order reversed.
fn reverse_addr(name: &[&[u8]]) -> Option<Ipv4Addr> {
    let head = name.get(..name.len().checked_sub(REVERSE.len())?)?;
    if head.is_empty() {
        return None;
    }
    let joined = head
        .iter()
        .map(|l| std::str::from_utf8(l).ok().filter(|_| plain(l)))
        .collect::<Option<Vec<_>>>()?
        .join(".");
    let ip = match joined.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    };
    let mut o = ip.octets();
    o.reverse();
    Some(Ipv4Addr::from(o))
}

/// miekg's `SetReply`: same id and opcode, RD and CD copied for a QUERY, the first question.
fn reply(p: &Parsed, rcode: ResponseCode) -> Message {
    let mut m = Message::new();
    m.set_id(p.header.id())
        .set_message_type(MessageType::Response)
        .set_op_code(p.header.op_code())
        .set_response_code(rcode);
    if p.header.op_code() == OpCode::Query {
        m.set_recursion_desired(p.header.recursion_desired())
            .set_checking_disabled(p.header.checking_disabled());
    }
    if let Some(q) = &p.question {
        m.add_query(q.clone());
    }
    m
}

/// Weave's `nameError`: NXDOMAIN, RA.
fn name_error(p: &Parsed) -> Action {
    let mut m = reply(p, ResponseCode::NXDomain);
    m.set_recursion_available(true);
    encode_or_drop(&m, MAX_MESSAGE)
}

/// miekg's `SetRcodeFormatError`: FORMERR, opcode QUERY, the id, nothing else.
fn format_error(h: &Header) -> Message {
    let mut m = Message::new();
    m.set_id(h.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_response_code(ResponseCode::FormErr);
    m
}

/// `m` encoded within `limit` bytes (records that do not fit are left out and TC set); `None`
/// if even the header and question do not fit.
fn encode(m: &Message, limit: usize) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_max_size(u16::try_from(limit).unwrap_or(u16::MAX));
    m.emit(&mut enc).ok()?;
    Some(buf)
}

fn encode_or_drop(m: &Message, limit: usize) -> Action {
    encode(m, limit).map_or(Action::Drop, Action::Answer)
}

/// A SERVFAIL (RA) answer to `query`, for when no upstream server answered a forwarded one
/// (Weave's `makeErrorResponse(req, RcodeServerFailure)`); `None` if it does not parse.
pub fn server_failure(query: &[u8]) -> Option<Vec<u8>> {
    let p = parse(query).ok()?;
    let mut m = reply(&p, ResponseCode::ServFail);
    m.set_recursion_available(true);
    encode(&m, MAX_MESSAGE)
}

/// What to send back for an upstream server's `answer` to a forwarded `query` (sent upstream
/// with an id of the caller's choosing): the answer with the query's id restored, its names
/// compressed if it is larger than the requester takes over `transport` (Weave's
/// `response.Compress = true`; it is not truncated). `None` if the query has no header or the
/// answer is shorter than one.
pub fn relay_upstream(query: &[u8], answer: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let (id, _) = query.split_at_checked(2)?;
    if answer.len() < HEADER_LEN || query.len() < HEADER_LEN {
        return None;
    }
    let mut out = answer.to_vec();
    out.get_mut(..2)?.copy_from_slice(id);
    let limit = match transport {
        Transport::Tcp => MAX_MESSAGE,
        Transport::Udp => parse(query)
            .ok()
            .and_then(|p| p.edns_size)
            .map_or(UDP_LIMIT, usize::from),
    };
    if out.len() <= limit {
        return Some(out);
    }
    match Message::from_vec(&out)
        .ok()
        .and_then(|m| encode(&m, MAX_MESSAGE))
    {
        Some(compressed) if compressed.len() < out.len() => Some(compressed),
        _ => Some(out),
    }
}

/// A recursive A query for `name` (made fully qualified) with `id`, as `dig` sends one; `None`
/// if `name` is no DNS name. For `weft dns-lookup`.
pub fn a_query(name: &str, id: u16) -> Option<Vec<u8>> {
    let name = Name::from_ascii(super::zone::fqdn(name)).ok()?;
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name, RecordType::A));
    m.to_bytes().ok()
}

/// The addresses of the A records in the answer section of `response` to query `id`, in
/// order; none if it is no such response.
pub fn answer_addrs(response: &[u8], id: u16) -> Vec<Ipv4Addr> {
    match Message::from_bytes(response) {
        Ok(m) if m.id() == id && m.message_type() == MessageType::Response => m
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod direct_tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn plain_a_questions_take_the_direct_path() {
        let mut m = Message::new();
        m.set_id(7)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .add_query(Query::query(
                Name::from_ascii("a.weave.local.").unwrap(),
                RecordType::A,
            ));
        let q = m.to_vec().unwrap();
        let p = parse(&q).ok().unwrap();
        assert_eq!(p.plain_question_end, Some(q.len()));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let addrs = vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];
        let b = Responder::new(1)
            .direct_a(&q, &p, addrs.clone(), Transport::Udp, &mut rng)
            .unwrap();
        assert_eq!(b.len(), q.len() + 32);
        // Too many for 512 bytes over UDP: left to the general path, which truncates.
        let many = vec![Ipv4Addr::new(10, 0, 0, 1); 40];
        assert!(Responder::new(1)
            .direct_a(&q, &p, many, Transport::Udp, &mut rng)
            .is_none());
        // A compressed question name is not copied.
        let mut c = q[..12].to_vec();
        c.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        assert_eq!(plain_name_end(&c, 12), None);
    }
}

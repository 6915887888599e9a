//! Pure RFB parsers over byte slices (RFC 6143 plus the common extensions).
//!
//! Every parser takes the bytes available from the current position of one direction and
//! returns `Ok((value, consumed))`, `Err(ParseError::Incomplete(n))` when at least `n` bytes (from
//! the same position) are needed, or `Err(ParseError::Invalid(why))`. Parsers never keep state;
//! the per-direction state machine in [`super::state`] decides which parser applies next.
//!
//! Large bodies (raw pixel data, cut text, file transfers) are never parsed here: the parsers
//! return their length and the state machine skips or hashes them as they stream past.

use std::fmt;

/// Why a parser could not produce a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// At least this many bytes (counted from the start of the input) are needed.
    Incomplete(usize),
    /// The bytes cannot be this message.
    Invalid(&'static str),
}

/// A parsed value and the number of bytes it took.
pub type Parsed<T> = Result<(T, usize), ParseError>;

/// Longest desktop name, failure reason or Fence payload we accept before calling the bytes
/// invalid: a real server never comes close, and it bounds what one direction buffers.
pub const MAX_TEXT_LEN: usize = 64 * 1024;

#[inline]
fn need(input: &[u8], n: usize) -> Result<(), ParseError> {
    if input.len() < n {
        Err(ParseError::Incomplete(n))
    } else {
        Ok(())
    }
}

#[inline]
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

// ---------------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------------

/// `RFB xxx.yyy\n`, kept as numbers; shown as `"3.8"`, `"3.889"`, `"4.1"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    pub major: u16,
    pub minor: u16,
}

/// Which handshake rules a version follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dialect {
    /// 3.3 and every unknown 3.x below 3.7: the server chooses the security type (u32), no
    /// SecurityResult for None, no reason string on failure.
    V3_3,
    /// 3.7: type list, no SecurityResult for None, no reason string on failure.
    V3_7,
    /// 3.8 and later (Apple 3.889, UltraVNC 3.14/3.16, RealVNC 4.x/5.x): type list,
    /// SecurityResult always, reason string on failure.
    V3_8,
}

impl ProtocolVersion {
    pub fn dialect(self) -> Dialect {
        match (self.major, self.minor) {
            (0..=2, _) => Dialect::V3_3,
            (3, 7) => Dialect::V3_7,
            (3, m) if m >= 8 => Dialect::V3_8,
            (3, _) => Dialect::V3_3,
            _ => Dialect::V3_8,
        }
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Whether `input` can still be the start of a `RFB xxx.yyy\n` banner.
pub fn could_be_banner(input: &[u8]) -> bool {
    const TEMPLATE: &[u8; 12] = b"RFB 000.000\n";
    input
        .iter()
        .take(12)
        .enumerate()
        .all(|(i, &b)| match TEMPLATE[i] {
            b'0' => b.is_ascii_digit(),
            t => b == t,
        })
}

/// ProtocolVersion message: exactly `RFB ddd.ddd\n`.
pub fn parse_protocol_version(input: &[u8]) -> Parsed<ProtocolVersion> {
    if !could_be_banner(input) {
        return Err(ParseError::Invalid("not an RFB ProtocolVersion banner"));
    }
    need(input, 12)?;
    let num = |s: &[u8]| {
        s.iter()
            .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'))
    };
    Ok((
        ProtocolVersion {
            major: num(&input[4..7]),
            minor: num(&input[8..11]),
        },
        12,
    ))
}

/// Reason string: u32 length + bytes.
pub fn parse_reason(input: &[u8]) -> Parsed<&[u8]> {
    need(input, 4)?;
    let len = u32_at(input, 0) as usize;
    if len > MAX_TEXT_LEN {
        return Err(ParseError::Invalid("reason string too long"));
    }
    need(input, 4 + len)?;
    Ok((&input[4..4 + len], 4 + len))
}

/// Server's security types message (3.7 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityTypes<'a> {
    /// The types offered, one byte each.
    Offered(&'a [u8]),
    /// Count 0: the server refuses the connection and says why.
    Refused { reason: &'a [u8] },
}

pub fn parse_security_types(input: &[u8]) -> Parsed<SecurityTypes<'_>> {
    need(input, 1)?;
    let count = input[0] as usize;
    if count == 0 {
        let (reason, n) = parse_reason(&input[1..]).map_err(|e| shift(e, 1))?;
        return Ok((SecurityTypes::Refused { reason }, 1 + n));
    }
    need(input, 1 + count)?;
    Ok((SecurityTypes::Offered(&input[1..1 + count]), 1 + count))
}

/// Server's security type in RFB 3.3 (the server chooses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSecurity33<'a> {
    Chosen(u32),
    /// Type 0: connection failed, with a reason (Xvnc's "Too many security failures").
    Refused {
        reason: &'a [u8],
    },
}

pub fn parse_security_type_v33(input: &[u8]) -> Parsed<ServerSecurity33<'_>> {
    need(input, 4)?;
    match u32_at(input, 0) {
        0 => {
            let (reason, n) = parse_reason(&input[4..]).map_err(|e| shift(e, 4))?;
            Ok((ServerSecurity33::Refused { reason }, 4 + n))
        }
        t => Ok((ServerSecurity33::Chosen(t), 4)),
    }
}

/// A big-endian u32 (security type choice in Tight/VeNCrypt, SecurityResult word, ...).
pub fn parse_u32(input: &[u8]) -> Parsed<u32> {
    need(input, 4)?;
    Ok((u32_at(input, 0), 4))
}

/// A single byte (client's security type choice, ClientInit shared flag, status bytes).
pub fn parse_u8(input: &[u8]) -> Parsed<u8> {
    need(input, 1)?;
    Ok((input[0], 1))
}

/// Fixed-size opaque block (VNC auth challenge and response: 16 bytes). The content is not
/// returned: the agent never keeps challenges or responses.
pub fn parse_opaque(input: &[u8], len: usize) -> Parsed<()> {
    need(input, len)?;
    Ok(((), len))
}

/// Apple Remote Desktop (type 30) Diffie-Hellman parameters from the server:
/// u16 generator, u16 key length, prime and public key of that length.
pub fn parse_ard_params(input: &[u8]) -> Parsed<u16> {
    need(input, 4)?;
    let key_len = u16_at(input, 2);
    if key_len == 0 {
        return Err(ParseError::Invalid("ARD key length 0"));
    }
    let total = 4 + 2 * key_len as usize;
    need(input, total)?;
    Ok((key_len, total))
}

/// Tight security capability list: u32 count then 16 bytes each (code, vendor, name).
/// Returns the codes.
pub fn parse_tight_capabilities(input: &[u8]) -> Parsed<Vec<u32>> {
    need(input, 4)?;
    let count = u32_at(input, 0) as usize;
    if count > 256 {
        return Err(ParseError::Invalid("Tight capability list too long"));
    }
    need(input, 4 + 16 * count)?;
    let codes = (0..count).map(|i| u32_at(input, 4 + 16 * i)).collect();
    Ok((codes, 4 + 16 * count))
}

/// Tight interaction capabilities after ServerInit: u16 server msgs, u16 client msgs,
/// u16 encodings, u16 pad, then 16 bytes per capability.
pub fn parse_tight_interaction_caps(input: &[u8]) -> Parsed<()> {
    need(input, 8)?;
    let n = u16_at(input, 0) as usize + u16_at(input, 2) as usize + u16_at(input, 4) as usize;
    need(input, 8 + 16 * n)?;
    Ok(((), 8 + 16 * n))
}

/// VeNCrypt version (u8 major, u8 minor) in either direction.
pub fn parse_vencrypt_version(input: &[u8]) -> Parsed<(u8, u8)> {
    need(input, 2)?;
    Ok(((input[0], input[1]), 2))
}

/// VeNCrypt subtype list from the server: version 0.2 sends u8 count + u32 each,
/// version 0.1 u8 count + u8 each.
pub fn parse_vencrypt_subtypes(input: &[u8], wide: bool) -> Parsed<Vec<u32>> {
    need(input, 1)?;
    let count = input[0] as usize;
    let width = if wide { 4 } else { 1 };
    need(input, 1 + width * count)?;
    let types = (0..count)
        .map(|i| {
            if wide {
                u32_at(input, 1 + 4 * i)
            } else {
                u32::from(input[1 + i])
            }
        })
        .collect();
    Ok((types, 1 + width * count))
}

/// VeNCrypt Plain credentials: u32 username length, u32 password length, then both. Only the
/// length is returned; the credentials are skipped unread.
pub fn parse_plain_credentials(input: &[u8]) -> Parsed<()> {
    need(input, 8)?;
    let len = u32_at(input, 0) as usize + u32_at(input, 4) as usize;
    if len > MAX_TEXT_LEN {
        return Err(ParseError::Invalid("Plain credentials too long"));
    }
    need(input, 8 + len)?;
    Ok(((), 8 + len))
}

/// xvp security (type 22) credentials: u8 username length, u8 target length, both strings.
pub fn parse_xvp_credentials(input: &[u8]) -> Parsed<()> {
    need(input, 2)?;
    let len = 2 + input[0] as usize + input[1] as usize;
    need(input, len)?;
    Ok(((), len))
}

/// Pixel format (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    pub bits_per_pixel: u8,
    pub depth: u8,
    pub big_endian: bool,
    pub true_colour: bool,
    pub red_max: u16,
    pub green_max: u16,
    pub blue_max: u16,
    pub red_shift: u8,
    pub green_shift: u8,
    pub blue_shift: u8,
}

impl PixelFormat {
    /// The 32-bit RGBA format CursorWithAlpha data always uses.
    pub const RGBA32: PixelFormat = PixelFormat {
        bits_per_pixel: 32,
        depth: 32,
        big_endian: false,
        true_colour: true,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 0,
        green_shift: 8,
        blue_shift: 16,
    };

    pub fn parse(b: &[u8]) -> PixelFormat {
        PixelFormat {
            bits_per_pixel: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            true_colour: b[3] != 0,
            red_max: u16_at(b, 4),
            green_max: u16_at(b, 6),
            blue_max: u16_at(b, 8),
            red_shift: b[10],
            green_shift: b[11],
            blue_shift: b[12],
        }
    }

    /// Bytes per pixel, when the format has a whole number of them.
    pub fn bytes_per_pixel(&self) -> Option<u64> {
        match self.bits_per_pixel {
            8 | 16 | 24 | 32 => Some(u64::from(self.bits_per_pixel / 8)),
            _ => None,
        }
    }

    /// Size of a Tight TPIXEL: 3 bytes for 32bpp depth-24 true colour with 8-bit channels.
    pub fn tight_pixel_bytes(&self) -> Option<u64> {
        if self.bits_per_pixel == 32
            && self.depth == 24
            && self.true_colour
            && self.red_max == 255
            && self.green_max == 255
            && self.blue_max == 255
        {
            Some(3)
        } else {
            self.bytes_per_pixel()
        }
    }

    /// Size of a ZRLE/TRLE CPIXEL: 3 bytes for 32bpp true colour of depth 24 or less.
    pub fn compressed_pixel_bytes(&self) -> Option<u64> {
        if self.bits_per_pixel == 32 && self.depth <= 24 && self.true_colour {
            Some(3)
        } else {
            self.bytes_per_pixel()
        }
    }

    /// Human-readable summary, e.g. `32bpp depth 24 LE true-colour`.
    pub fn describe(&self) -> String {
        format!(
            "{}bpp depth {} {} {}",
            self.bits_per_pixel,
            self.depth,
            if self.big_endian { "BE" } else { "LE" },
            if self.true_colour {
                "true-colour"
            } else {
                "colour-map"
            }
        )
    }
}

/// ServerInit: framebuffer size, pixel format and desktop name (raw bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerInit<'a> {
    pub width: u16,
    pub height: u16,
    pub pixel_format: PixelFormat,
    pub name: &'a [u8],
}

pub fn parse_server_init(input: &[u8]) -> Parsed<ServerInit<'_>> {
    need(input, 24)?;
    let (name, n) = parse_reason(&input[20..]).map_err(|e| shift(e, 20))?;
    Ok((
        ServerInit {
            width: u16_at(input, 0),
            height: u16_at(input, 2),
            pixel_format: PixelFormat::parse(&input[4..20]),
            name,
        },
        20 + n,
    ))
}

// ---------------------------------------------------------------------------------------------
// Client to server messages
// ---------------------------------------------------------------------------------------------

/// A client message. Bodies that may be large (cut text, file transfer, text chat, gii) are not
/// included: `body_len` says how many bytes follow the parsed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    SetPixelFormat(PixelFormat),
    /// The encodings, 4 bytes each (big-endian i32); see [`encodings`].
    SetEncodings(&'a [u8]),
    FramebufferUpdateRequest {
        incremental: bool,
        x: u16,
        y: u16,
        width: u16,
        height: u16,
    },
    /// The key value is deliberately not returned.
    KeyEvent,
    PointerEvent,
    /// ClientCutText; `extended` for the extended clipboard form (negative length).
    CutText {
        body_len: u32,
        extended: bool,
    },
    /// UltraVNC file transfer (type 7).
    FileTransfer {
        body_len: u32,
    },
    /// UltraVNC SetScale (8), SetServerInput (9), SetSW (10) and similar fixed messages.
    UltraControl,
    /// UltraVNC TextChat (11).
    TextChat {
        body_len: u32,
    },
    EnableContinuousUpdates,
    Fence,
    Xvp,
    SetDesktopSize,
    /// gii (253).
    Gii {
        body_len: u32,
    },
    /// QEMU extended key event (255/0); the key is not returned.
    QemuExtendedKeyEvent,
    /// QEMU audio (255/1).
    QemuAudio,
}

impl ClientMessage<'_> {
    pub fn body_len(&self) -> u64 {
        match *self {
            ClientMessage::CutText { body_len, .. }
            | ClientMessage::FileTransfer { body_len }
            | ClientMessage::TextChat { body_len }
            | ClientMessage::Gii { body_len } => u64::from(body_len),
            _ => 0,
        }
    }
}

/// Decodes a SetEncodings list.
pub fn encodings(raw: &[u8]) -> impl Iterator<Item = i32> + '_ {
    raw.chunks_exact(4).map(|c| i32_at(c, 0))
}

/// Longest SetEncodings we accept (real clients send a few dozen).
const MAX_ENCODINGS: usize = 1024;

/// Cut text length word: positive = classic Latin-1 text, negative = extended clipboard
/// (flags + zlib data of `-len` bytes).
fn cut_text_len(word: u32) -> Result<(u32, bool), ParseError> {
    let signed = word as i32;
    let (len, extended) = if signed < 0 {
        (signed.unsigned_abs(), true)
    } else {
        (word, false)
    };
    if len > 256 * 1024 * 1024 {
        return Err(ParseError::Invalid("cut text longer than 256 MiB"));
    }
    Ok((len, extended))
}

pub fn parse_client_message(input: &[u8]) -> Parsed<ClientMessage<'_>> {
    need(input, 1)?;
    match input[0] {
        0 => {
            need(input, 20)?;
            Ok((
                ClientMessage::SetPixelFormat(PixelFormat::parse(&input[4..20])),
                20,
            ))
        }
        2 => {
            need(input, 4)?;
            let count = u16_at(input, 2) as usize;
            if count > MAX_ENCODINGS {
                return Err(ParseError::Invalid("SetEncodings with too many encodings"));
            }
            need(input, 4 + 4 * count)?;
            Ok((
                ClientMessage::SetEncodings(&input[4..4 + 4 * count]),
                4 + 4 * count,
            ))
        }
        3 => {
            need(input, 10)?;
            if input[1] > 1 {
                return Err(ParseError::Invalid(
                    "FramebufferUpdateRequest incremental flag",
                ));
            }
            Ok((
                ClientMessage::FramebufferUpdateRequest {
                    incremental: input[1] != 0,
                    x: u16_at(input, 2),
                    y: u16_at(input, 4),
                    width: u16_at(input, 6),
                    height: u16_at(input, 8),
                },
                10,
            ))
        }
        4 => {
            need(input, 8)?;
            if input[1] > 1 {
                return Err(ParseError::Invalid("KeyEvent down flag"));
            }
            Ok((ClientMessage::KeyEvent, 8))
        }
        5 => {
            need(input, 6)?;
            Ok((ClientMessage::PointerEvent, 6))
        }
        6 => {
            need(input, 8)?;
            let (body_len, extended) = cut_text_len(u32_at(input, 4))?;
            Ok((ClientMessage::CutText { body_len, extended }, 8))
        }
        7 => {
            let (body_len, n) = parse_file_transfer(input)?;
            Ok((ClientMessage::FileTransfer { body_len }, n))
        }
        8 | 9 => {
            need(input, 4)?;
            Ok((ClientMessage::UltraControl, 4))
        }
        10 => {
            need(input, 6)?;
            Ok((ClientMessage::UltraControl, 6))
        }
        11 => {
            let (body_len, n) = parse_text_chat(input)?;
            Ok((ClientMessage::TextChat { body_len }, n))
        }
        150 => {
            need(input, 10)?;
            if input[1] > 1 {
                return Err(ParseError::Invalid("EnableContinuousUpdates flag"));
            }
            Ok((ClientMessage::EnableContinuousUpdates, 10))
        }
        248 => {
            let n = parse_fence(input)?;
            Ok((ClientMessage::Fence, n))
        }
        250 => {
            need(input, 4)?;
            Ok((ClientMessage::Xvp, 4))
        }
        251 => {
            need(input, 8)?;
            let screens = input[6] as usize;
            need(input, 8 + 16 * screens)?;
            Ok((ClientMessage::SetDesktopSize, 8 + 16 * screens))
        }
        253 => {
            need(input, 4)?;
            let body_len = u32::from(u16_at(input, 2));
            Ok((ClientMessage::Gii { body_len }, 4))
        }
        255 => {
            need(input, 2)?;
            match input[1] {
                0 => {
                    need(input, 12)?;
                    Ok((ClientMessage::QemuExtendedKeyEvent, 12))
                }
                1 => {
                    need(input, 4)?;
                    match u16_at(input, 2) {
                        0 | 1 => Ok((ClientMessage::QemuAudio, 4)),
                        2 => {
                            need(input, 10)?;
                            Ok((ClientMessage::QemuAudio, 10))
                        }
                        _ => Err(ParseError::Invalid("QEMU audio operation")),
                    }
                }
                _ => Err(ParseError::Invalid("QEMU client message subtype")),
            }
        }
        _ => Err(ParseError::Invalid("unknown client message type")),
    }
}

/// UltraVNC file transfer (7) in either direction: type, contentType, contentParam, pad,
/// u32 size, u32 length, then `length` bytes. Returns the length.
fn parse_file_transfer(input: &[u8]) -> Parsed<u32> {
    need(input, 12)?;
    let body_len = u32_at(input, 8);
    if body_len > 256 * 1024 * 1024 {
        return Err(ParseError::Invalid("file transfer block too long"));
    }
    Ok((body_len, 12))
}

/// UltraVNC TextChat (11) in either direction: type, 3 pad, u32 length, text. The lengths
/// 0xFFFFFFFF (open), 0xFFFFFFFE (close) and 0xFFFFFFFD (finished) carry no text.
fn parse_text_chat(input: &[u8]) -> Parsed<u32> {
    need(input, 8)?;
    let len = u32_at(input, 4);
    let body_len = if len >= 0xFFFF_FFF0 { 0 } else { len };
    if body_len > 1024 * 1024 {
        return Err(ParseError::Invalid("text chat too long"));
    }
    Ok((body_len, 8))
}

/// Fence (248) in either direction: type, 3 pad, u32 flags, u8 length (<= 64), payload.
fn parse_fence(input: &[u8]) -> Result<usize, ParseError> {
    need(input, 9)?;
    let len = input[8] as usize;
    if len > 64 {
        return Err(ParseError::Invalid("Fence payload longer than 64"));
    }
    need(input, 9 + len)?;
    Ok(9 + len)
}

// ---------------------------------------------------------------------------------------------
// Server to client messages
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMessage {
    /// Header of a FramebufferUpdate; the rectangles follow. 0xFFFF = ended by LastRect.
    FramebufferUpdate {
        rects: u16,
    },
    /// SetColourMapEntries: `body_len` bytes of colours follow.
    SetColourMapEntries {
        body_len: u32,
    },
    Bell,
    CutText {
        body_len: u32,
        extended: bool,
    },
    /// UltraVNC ResizeFrameBuffer (4).
    ResizeFrameBuffer {
        width: u16,
        height: u16,
    },
    /// UltraVNC file transfer (7).
    FileTransfer {
        body_len: u32,
    },
    /// UltraVNC TextChat (11).
    TextChat {
        body_len: u32,
    },
    EndOfContinuousUpdates,
    Fence,
    Xvp,
    /// gii (253).
    Gii {
        body_len: u32,
    },
    /// QEMU audio (255/1): `body_len` bytes of samples follow.
    QemuAudio {
        body_len: u32,
    },
}

impl ServerMessage {
    pub fn body_len(&self) -> u64 {
        match *self {
            ServerMessage::SetColourMapEntries { body_len }
            | ServerMessage::CutText { body_len, .. }
            | ServerMessage::FileTransfer { body_len }
            | ServerMessage::TextChat { body_len }
            | ServerMessage::Gii { body_len }
            | ServerMessage::QemuAudio { body_len } => u64::from(body_len),
            _ => 0,
        }
    }
}

pub fn parse_server_message(input: &[u8]) -> Parsed<ServerMessage> {
    need(input, 1)?;
    match input[0] {
        0 => {
            need(input, 4)?;
            Ok((
                ServerMessage::FramebufferUpdate {
                    rects: u16_at(input, 2),
                },
                4,
            ))
        }
        1 => {
            need(input, 6)?;
            let body_len = 6 * u32::from(u16_at(input, 4));
            Ok((ServerMessage::SetColourMapEntries { body_len }, 6))
        }
        2 => Ok((ServerMessage::Bell, 1)),
        3 => {
            need(input, 8)?;
            let (body_len, extended) = cut_text_len(u32_at(input, 4))?;
            Ok((ServerMessage::CutText { body_len, extended }, 8))
        }
        4 => {
            need(input, 6)?;
            Ok((
                ServerMessage::ResizeFrameBuffer {
                    width: u16_at(input, 2),
                    height: u16_at(input, 4),
                },
                6,
            ))
        }
        7 => {
            let (body_len, n) = parse_file_transfer(input)?;
            Ok((ServerMessage::FileTransfer { body_len }, n))
        }
        11 => {
            let (body_len, n) = parse_text_chat(input)?;
            Ok((ServerMessage::TextChat { body_len }, n))
        }
        150 => Ok((ServerMessage::EndOfContinuousUpdates, 1)),
        248 => {
            let n = parse_fence(input)?;
            Ok((ServerMessage::Fence, n))
        }
        250 => {
            need(input, 4)?;
            Ok((ServerMessage::Xvp, 4))
        }
        253 => {
            need(input, 4)?;
            Ok((
                ServerMessage::Gii {
                    body_len: u32::from(u16_at(input, 2)),
                },
                4,
            ))
        }
        255 => {
            need(input, 4)?;
            if input[1] != 1 {
                return Err(ParseError::Invalid("QEMU server message subtype"));
            }
            match u16_at(input, 2) {
                0 | 1 => Ok((ServerMessage::QemuAudio { body_len: 0 }, 4)),
                2 => {
                    need(input, 8)?;
                    let body_len = u32_at(input, 4);
                    if body_len > 16 * 1024 * 1024 {
                        return Err(ParseError::Invalid("QEMU audio block too long"));
                    }
                    Ok((ServerMessage::QemuAudio { body_len }, 8))
                }
                _ => Err(ParseError::Invalid("QEMU audio operation")),
            }
        }
        _ => Err(ParseError::Invalid("unknown server message type")),
    }
}

// ---------------------------------------------------------------------------------------------
// Rectangles
// ---------------------------------------------------------------------------------------------

/// Encoding numbers (RFC 6143 section 7.7 and the RFB community registry).
pub mod encoding {
    pub const RAW: i32 = 0;
    pub const COPY_RECT: i32 = 1;
    pub const RRE: i32 = 2;
    pub const CORRE: i32 = 4;
    pub const HEXTILE: i32 = 5;
    pub const ZLIB: i32 = 6;
    pub const TIGHT: i32 = 7;
    pub const ZLIBHEX: i32 = 8;
    pub const TRLE: i32 = 15;
    pub const ZRLE: i32 = 16;
    pub const ZYWRLE: i32 = 17;
    pub const H264: i32 = 50;
    pub const TIGHT_PNG: i32 = -260;
    pub const DESKTOP_SIZE: i32 = -223;
    pub const LAST_RECT: i32 = -224;
    pub const POINTER_POS: i32 = -232;
    pub const CURSOR: i32 = -239;
    pub const X_CURSOR: i32 = -240;
    pub const QEMU_POINTER_MOTION_CHANGE: i32 = -257;
    pub const QEMU_EXTENDED_KEY_EVENT: i32 = -258;
    pub const QEMU_AUDIO: i32 = -259;
    pub const QEMU_LED_STATE: i32 = -261;
    pub const DESKTOP_NAME: i32 = -307;
    pub const EXTENDED_DESKTOP_SIZE: i32 = -308;
    pub const XVP: i32 = -309;
    pub const CURSOR_WITH_ALPHA: i32 = -314;
    pub const EXTENDED_MOUSE_BUTTONS: i32 = -316;
    pub const VMWARE_CURSOR: i32 = 0x574d_5664;
    pub const VMWARE_CURSOR_STATE: i32 = 0x574d_5665;
    pub const VMWARE_CURSOR_POSITION: i32 = 0x574d_5666;
    pub const VMWARE_LED_STATE: i32 = 0x574d_5668;
}

/// Rectangle header (12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RectHeader {
    pub x: u16,
    pub y: u16,
    pub width: u16,
    pub height: u16,
    pub encoding: i32,
}

impl RectHeader {
    pub fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// Number of 16x16 tiles (Hextile, TRLE).
    pub fn tiles(&self, size: u32) -> u32 {
        u32::from(self.width).div_ceil(size) * u32::from(self.height).div_ceil(size)
    }

    /// Width and height of tile `index` (row-major, `size`x`size` tiles).
    pub fn tile_size(&self, index: u32, size: u32) -> (u32, u32) {
        let w = u32::from(self.width);
        let h = u32::from(self.height);
        let per_row = w.div_ceil(size).max(1);
        let tx = (index % per_row) * size;
        let ty = (index / per_row) * size;
        (size.min(w - tx), size.min(h - ty))
    }
}

pub fn parse_rect_header(input: &[u8]) -> Parsed<RectHeader> {
    need(input, 12)?;
    Ok((
        RectHeader {
            x: u16_at(input, 0),
            y: u16_at(input, 2),
            width: u16_at(input, 4),
            height: u16_at(input, 6),
            encoding: i32_at(input, 8),
        },
        12,
    ))
}

/// How a rectangle's body is laid out, decided from its header and the pixel format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RectBody {
    /// Exactly this many bytes follow (Raw, CopyRect, cursors, pseudo-encodings with no data).
    Fixed(u64),
    /// LastRect: no data, and the update ends here.
    LastRect,
    /// u32 length then that many bytes (ZRLE, Zlib, ZYWRLE).
    LengthPrefixed,
    /// RRE (`compact = false`) or CoRRE: u32 count, background pixel, subrects.
    Rre { compact: bool },
    /// Hextile (or ZlibHex) tiles.
    Hextile { zlib: bool },
    /// TRLE tiles.
    Trle,
    /// Tight or TightPNG.
    Tight,
    /// CursorWithAlpha: u32 encoding, then that encoding's data in 32-bit RGBA.
    CursorWithAlpha,
    /// ExtendedDesktopSize: u8 screens, 3 pad, 16 bytes per screen.
    ExtendedDesktopSize,
    /// DesktopName: u32 length + name.
    DesktopName,
    /// VMware cursor: u8 type, u8 pad, then masks or alpha data.
    VmwareCursor,
    /// H.264: u32 length, u32 flags, data.
    H264,
    /// An encoding we cannot size: the direction loses framing.
    Unknown,
}

/// Lays out a rectangle's body. `bpp` is the bytes per pixel of the pixel format in force
/// (None when the format has no whole number of bytes per pixel).
pub fn rect_body(rect: &RectHeader, bpp: Option<u64>) -> RectBody {
    use encoding::*;
    let area = rect.area();
    let mask = u64::from(rect.width).div_ceil(8) * u64::from(rect.height);
    match rect.encoding {
        RAW => bpp.map_or(RectBody::Unknown, |b| RectBody::Fixed(area * b)),
        COPY_RECT => RectBody::Fixed(4),
        RRE => RectBody::Rre { compact: false },
        CORRE => RectBody::Rre { compact: true },
        HEXTILE => RectBody::Hextile { zlib: false },
        ZLIBHEX => RectBody::Hextile { zlib: true },
        ZLIB | ZRLE | ZYWRLE => RectBody::LengthPrefixed,
        TRLE => RectBody::Trle,
        TIGHT | TIGHT_PNG => RectBody::Tight,
        H264 => RectBody::H264,
        LAST_RECT => RectBody::LastRect,
        DESKTOP_SIZE
        | POINTER_POS
        | QEMU_POINTER_MOTION_CHANGE
        | QEMU_EXTENDED_KEY_EVENT
        | QEMU_AUDIO
        | XVP
        | EXTENDED_MOUSE_BUTTONS
        | VMWARE_CURSOR_POSITION => RectBody::Fixed(0),
        QEMU_LED_STATE => RectBody::Fixed(1),
        VMWARE_CURSOR_STATE => RectBody::Fixed(2),
        VMWARE_LED_STATE => RectBody::Fixed(4),
        CURSOR => bpp.map_or(RectBody::Unknown, |b| RectBody::Fixed(area * b + mask)),
        X_CURSOR => RectBody::Fixed(if area > 0 { 6 + 2 * mask } else { 0 }),
        CURSOR_WITH_ALPHA => RectBody::CursorWithAlpha,
        EXTENDED_DESKTOP_SIZE => RectBody::ExtendedDesktopSize,
        DESKTOP_NAME => RectBody::DesktopName,
        VMWARE_CURSOR => RectBody::VmwareCursor,
        _ => RectBody::Unknown,
    }
}

/// RRE / CoRRE header: u32 subrect count and background pixel. Returns the bytes of subrects
/// that follow.
pub fn parse_rre_header(input: &[u8], bpp: u64, compact: bool) -> Parsed<u64> {
    let head = 4 + bpp as usize;
    need(input, head)?;
    let count = u64::from(u32_at(input, 0));
    let per = bpp + if compact { 4 } else { 8 };
    Ok((count * per, head))
}

/// u32 length prefix (ZRLE, Zlib, ZYWRLE). Returns the bytes that follow.
pub fn parse_length_prefix(input: &[u8]) -> Parsed<u64> {
    need(input, 4)?;
    Ok((u64::from(u32_at(input, 0)), 4))
}

/// H.264 rectangle header: u32 length, u32 flags. Returns the bytes that follow.
pub fn parse_h264_header(input: &[u8]) -> Parsed<u64> {
    need(input, 8)?;
    Ok((u64::from(u32_at(input, 0)), 8))
}

/// ExtendedDesktopSize body: u8 number of screens, 3 pad, 16 bytes per screen.
pub fn parse_extended_desktop_size(input: &[u8]) -> Parsed<u8> {
    need(input, 4)?;
    let screens = input[0];
    let len = 4 + 16 * screens as usize;
    need(input, len)?;
    Ok((screens, len))
}

/// VMware cursor header: u8 type, u8 pad. Returns the bytes that follow.
pub fn parse_vmware_cursor(input: &[u8], rect: &RectHeader, bpp: Option<u64>) -> Parsed<u64> {
    need(input, 2)?;
    match input[0] {
        0 => {
            let bpp = bpp.ok_or(ParseError::Invalid("VMware cursor without pixel size"))?;
            Ok((2 * rect.area() * bpp, 2))
        }
        1 => Ok((rect.area() * 4, 2)),
        _ => Err(ParseError::Invalid("VMware cursor type")),
    }
}

/// One Hextile (or ZlibHex) tile of `w`x`h` pixels. Returns `(skip, header_len)`: the header
/// (subencoding, colours, subrects) is parsed whole; raw or zlib data (`skip` bytes) follows it.
pub fn parse_hextile_tile(input: &[u8], w: u32, h: u32, bpp: u64, zlib: bool) -> Parsed<u64> {
    const RAW: u8 = 1;
    const BACKGROUND: u8 = 2;
    const FOREGROUND: u8 = 4;
    const ANY_SUBRECTS: u8 = 8;
    const SUBRECTS_COLOURED: u8 = 16;
    const ZLIB_RAW: u8 = 32;
    const ZLIB_HEX: u8 = 64;
    need(input, 1)?;
    let sub = input[0];
    let bpp_us = bpp as usize;
    if zlib && sub & ZLIB_RAW != 0 {
        need(input, 3)?;
        return Ok((u64::from(u16_at(input, 1)), 3));
    }
    if sub & RAW != 0 {
        return Ok((u64::from(w) * u64::from(h) * bpp, 1));
    }
    if !zlib && sub > 31 {
        return Err(ParseError::Invalid("Hextile subencoding"));
    }
    let mut at = 1;
    if sub & BACKGROUND != 0 {
        at += bpp_us;
    }
    if sub & FOREGROUND != 0 {
        at += bpp_us;
    }
    if zlib && sub & ZLIB_HEX != 0 {
        need(input, at + 2)?;
        return Ok((u64::from(u16_at(input, at)), at + 2));
    }
    if sub & ANY_SUBRECTS != 0 {
        need(input, at + 1)?;
        let count = input[at] as usize;
        at += 1;
        let per = 2 + if sub & SUBRECTS_COLOURED != 0 {
            bpp_us
        } else {
            0
        };
        at += count * per;
    }
    need(input, at)?;
    Ok((0, at))
}

/// One TRLE tile of `w`x`h` pixels with `cpixel`-byte compressed pixels. `palette` is the
/// palette size of the previous tile (for the reuse subencodings); the new one is returned.
pub fn parse_trle_tile(input: &[u8], w: u32, h: u32, cpixel: u64, palette: u8) -> Parsed<u8> {
    need(input, 1)?;
    let sub = input[0];
    let cp = cpixel as usize;
    let pixels = (w * h) as usize;
    let packed_len = |size: u8| -> usize {
        let bits = match size {
            0..=2 => 1,
            3..=4 => 2,
            _ => 4,
        };
        (w as usize * bits).div_ceil(8) * h as usize
    };
    match sub {
        0 => {
            let len = 1 + pixels * cp;
            need(input, len)?;
            Ok((palette, len))
        }
        1 => {
            need(input, 1 + cp)?;
            Ok((palette, 1 + cp))
        }
        2..=16 => {
            let len = 1 + sub as usize * cp + packed_len(sub);
            need(input, len)?;
            Ok((sub, len))
        }
        127 => {
            if palette == 0 {
                return Err(ParseError::Invalid("TRLE palette reuse without a palette"));
            }
            let len = 1 + packed_len(palette);
            need(input, len)?;
            Ok((palette, len))
        }
        128 => {
            let len = rle_runs(input, 1, pixels, cp, false)?;
            Ok((palette, len))
        }
        129 => {
            if palette == 0 {
                return Err(ParseError::Invalid("TRLE palette reuse without a palette"));
            }
            let len = rle_runs(input, 1, pixels, 0, true)?;
            Ok((palette, len))
        }
        130..=255 => {
            let size = sub - 128;
            let start = 1 + size as usize * cp;
            need(input, start)?;
            let len = rle_runs(input, start, pixels, 0, true)?;
            Ok((size, len))
        }
        _ => Err(ParseError::Invalid("TRLE subencoding")),
    }
}

/// Walks TRLE runs from `at` until `pixels` pixels are covered. Plain RLE runs are a CPIXEL
/// and a run length; palette RLE runs are an index byte, with a run length when bit 7 is set.
fn rle_runs(
    input: &[u8],
    mut at: usize,
    pixels: usize,
    cp: usize,
    palette: bool,
) -> Result<usize, ParseError> {
    let mut covered = 0usize;
    while covered < pixels {
        let has_length = if palette {
            need(input, at + 1)?;
            let idx = input[at];
            at += 1;
            idx & 0x80 != 0
        } else {
            at += cp;
            true
        };
        let mut run = 1usize;
        if has_length {
            loop {
                need(input, at + 1)?;
                let b = input[at];
                at += 1;
                run += b as usize;
                if b != 255 {
                    break;
                }
                if run > pixels {
                    return Err(ParseError::Invalid("TRLE run longer than its tile"));
                }
            }
        }
        covered += run;
    }
    if covered > pixels {
        return Err(ParseError::Invalid("TRLE run longer than its tile"));
    }
    Ok(at)
}

/// Tight compact length: 1 to 3 bytes, 7 bits each (8 in the third).
pub fn parse_compact_length(input: &[u8]) -> Parsed<u64> {
    need(input, 1)?;
    let mut len = u64::from(input[0] & 0x7f);
    if input[0] & 0x80 == 0 {
        return Ok((len, 1));
    }
    need(input, 2)?;
    len |= u64::from(input[1] & 0x7f) << 7;
    if input[1] & 0x80 == 0 {
        return Ok((len, 2));
    }
    need(input, 3)?;
    len |= u64::from(input[2]) << 14;
    Ok((len, 3))
}

/// A Tight / TightPNG rectangle header: compression control, optional filter and palette,
/// then either raw data (< 12 bytes) or a compact length. Returns `(data_len, header_len)`:
/// `data_len` bytes of (compressed) data follow the header.
pub fn parse_tight_header(input: &[u8], rect: &RectHeader, tpixel: u64) -> Parsed<u64> {
    const MIN_TO_COMPRESS: u64 = 12;
    need(input, 1)?;
    let control = input[0] >> 4;
    let tp = tpixel as usize;
    match control {
        0x8 => {
            // FillCompression: one TPIXEL.
            need(input, 1 + tp)?;
            Ok((0, 1 + tp))
        }
        0x9 | 0xA => {
            // JpegCompression / PngCompression: compact length + data.
            let (len, n) = parse_compact_length(&input[1..]).map_err(|e| shift(e, 1))?;
            Ok((len, 1 + n))
        }
        0x0..=0x7 => {
            let mut at = 1;
            let width = u64::from(rect.width);
            let height = u64::from(rect.height);
            let mut data = width * height * tpixel;
            if control & 0x4 != 0 {
                need(input, at + 1)?;
                let filter = input[at];
                at += 1;
                match filter {
                    0 | 2 => {}
                    1 => {
                        need(input, at + 1)?;
                        let colours = input[at] as usize + 1;
                        at += 1 + colours * tp;
                        need(input, at)?;
                        data = if colours <= 2 {
                            width.div_ceil(8) * height
                        } else {
                            width * height
                        };
                    }
                    _ => return Err(ParseError::Invalid("Tight filter id")),
                }
            }
            if data < MIN_TO_COMPRESS {
                need(input, at)?;
                return Ok((data, at));
            }
            let (len, n) = parse_compact_length(&input[at..]).map_err(|e| shift(e, at))?;
            Ok((len, at + n))
        }
        _ => Err(ParseError::Invalid("Tight compression control")),
    }
}

/// Moves an `Incomplete` error of a sub-parser that started `offset` bytes into the input.
#[inline]
fn shift(e: ParseError, offset: usize) -> ParseError {
    match e {
        ParseError::Incomplete(n) => ParseError::Incomplete(n + offset),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------------------------

/// Lossless escaped text: valid UTF-8 is kept except control characters; control characters,
/// bytes that are not UTF-8 and the backslash itself are written `\xNN` (backslash as `\\`),
/// so the original bytes can always be recovered.
pub fn escape_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() && (c as u32) < 0x100 => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn protocol_versions_from_real_banners() {
        // zeek vncmac (Apple), nDPI (RealVNC 4.1), suricata 3.3/3.7/3.8.
        let cases: &[(&[u8], &str, Dialect)] = &[
            (b"RFB 003.889\n", "3.889", Dialect::V3_8),
            (b"RFB 004.001\n", "4.1", Dialect::V3_8),
            (b"RFB 003.003\n", "3.3", Dialect::V3_3),
            (b"RFB 003.007\n", "3.7", Dialect::V3_7),
            (b"RFB 003.008\n", "3.8", Dialect::V3_8),
            (b"RFB 003.005\n", "3.5", Dialect::V3_3),
        ];
        for (bytes, text, dialect) in cases {
            let (v, n) = parse_protocol_version(bytes).unwrap();
            assert_eq!(n, 12);
            assert_eq!(v.to_string(), *text);
            assert_eq!(v.dialect(), *dialect);
        }
        assert_eq!(
            parse_protocol_version(b"RFB 003"),
            Err(ParseError::Incomplete(12))
        );
        assert!(matches!(
            parse_protocol_version(b"SSH-2.0-Open"),
            Err(ParseError::Invalid(_))
        ));
        assert!(could_be_banner(b"RF"));
        assert!(!could_be_banner(b"GET / HTTP/1.1"));
    }

    #[test]
    fn security_types_list_and_refusal() {
        // nDPI: RealVNC offers 7 types.
        let b = hex("07 0d 85 05 81 06 82 02");
        let (t, n) = parse_security_types(&b).unwrap();
        assert_eq!(n, 8);
        assert_eq!(t, SecurityTypes::Offered(&[13, 133, 5, 129, 6, 130, 2]));
        // suricata rfb_failure_16: zero types, reason "AAAAAAAAAAAAAAAA".
        let mut b = hex("00 00000010");
        b.extend_from_slice(b"AAAAAAAAAAAAAAAA");
        let (t, n) = parse_security_types(&b).unwrap();
        assert_eq!(n, 21);
        assert_eq!(
            t,
            SecurityTypes::Refused {
                reason: b"AAAAAAAAAAAAAAAA"
            }
        );
        assert_eq!(
            parse_security_types(&b[..3]),
            Err(ParseError::Incomplete(5))
        );
        assert_eq!(
            parse_security_types(&b[..6]),
            Err(ParseError::Incomplete(21))
        );
    }

    #[test]
    fn security_type_33_and_xvnc_refusal() {
        let b = hex("00000002");
        assert_eq!(
            parse_security_type_v33(&b),
            Ok((ServerSecurity33::Chosen(2), 4))
        );
        // Xvnc blacklist: u32 0 + "Too many security failures".
        let mut b = hex("00000000 0000001a");
        b.extend_from_slice(b"Too many security failures");
        let (t, n) = parse_security_type_v33(&b).unwrap();
        assert_eq!(n, 34);
        assert_eq!(
            t,
            ServerSecurity33::Refused {
                reason: b"Too many security failures"
            }
        );
    }

    #[test]
    fn ard_parameters_from_zeek_vncmac() {
        let mut b = hex("0002 0080");
        b.extend(std::iter::repeat_n(0xffu8, 256));
        assert_eq!(parse_ard_params(&b), Ok((128, 260)));
        assert_eq!(parse_ard_params(&b[..10]), Err(ParseError::Incomplete(260)));
    }

    #[test]
    fn server_init_from_zeek_vncmac() {
        // 1920x1080, name = 22 binary bytes + "MacMini SSD".
        let b = hex("07800438 2018000100ff00ff00ff100800 000000 00000021
             000000000002bffee703e000000000000000000000004d61634d696e6920535344");
        let (init, n) = parse_server_init(&b).unwrap();
        assert_eq!(n, b.len());
        assert_eq!((init.width, init.height), (1920, 1080));
        assert_eq!(
            init.pixel_format.describe(),
            "32bpp depth 24 LE true-colour"
        );
        assert_eq!(init.pixel_format.bytes_per_pixel(), Some(4));
        assert_eq!(init.pixel_format.tight_pixel_bytes(), Some(3));
        assert!(escape_text(init.name).ends_with("MacMini SSD"));
        assert!(escape_text(init.name).starts_with("\\x00\\x00"));
    }

    #[test]
    fn escape_is_lossless_text() {
        assert_eq!(escape_text(&[0xa0]), "\\xa0");
        assert_eq!(escape_text(b"root's X desktop"), "root's X desktop");
        assert_eq!(escape_text("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(escape_text(b"a\\b\n"), "a\\\\b\\x0a");
    }

    #[test]
    fn client_messages_from_real_bytes() {
        // zeek mac-to-linux: SetEncodings with 11 encodings.
        let b = hex("0200000b000003f3000003ea0000000600000010ffffff11000004500000044cffffff210000044d000004510000044e");
        let (m, n) = parse_client_message(&b).unwrap();
        assert_eq!(n, 48);
        let ClientMessage::SetEncodings(raw) = m else {
            panic!("{m:?}")
        };
        let list: Vec<i32> = encodings(raw).collect();
        assert_eq!(list[..4], [1011, 1002, 6, 16]);
        assert_eq!(list[4], -239);
        // SetPixelFormat then FramebufferUpdateRequest, one segment.
        let b = hex("000000002020000100ff00ff00ff100800000000 03000000000004000300");
        let (m, n) = parse_client_message(&b).unwrap();
        assert_eq!(n, 20);
        assert!(matches!(m, ClientMessage::SetPixelFormat(pf) if pf.depth == 32));
        let (m, n) = parse_client_message(&b[20..]).unwrap();
        assert_eq!(n, 10);
        assert_eq!(
            m,
            ClientMessage::FramebufferUpdateRequest {
                incremental: false,
                x: 0,
                y: 0,
                width: 1024,
                height: 768
            }
        );
        // vncdotool key down + up in one segment.
        let b = hex("0401000000000061 0400000000000061");
        assert_eq!(parse_client_message(&b), Ok((ClientMessage::KeyEvent, 8)));
        assert_eq!(
            parse_client_message(&b[8..]),
            Ok((ClientMessage::KeyEvent, 8))
        );
        // PointerEvent from suricata-partial-tx.
        let b = hex("0500036300cf");
        assert_eq!(
            parse_client_message(&b),
            Ok((ClientMessage::PointerEvent, 6))
        );
        // Classic and extended ClientCutText.
        let b = hex("06000000 00000005 68656c6c6f");
        assert_eq!(
            parse_client_message(&b),
            Ok((
                ClientMessage::CutText {
                    body_len: 5,
                    extended: false
                },
                8
            ))
        );
        let b = hex("06000000 fffffff8");
        assert_eq!(
            parse_client_message(&b),
            Ok((
                ClientMessage::CutText {
                    body_len: 8,
                    extended: true
                },
                8
            ))
        );
        // TigerVNC Fence, EnableContinuousUpdates, QEMU extended key event.
        let b = hex("f8000000 80000007 00");
        assert_eq!(parse_client_message(&b), Ok((ClientMessage::Fence, 9)));
        let b = hex("96 01 0000 0000 0400 0300");
        assert_eq!(
            parse_client_message(&b),
            Ok((ClientMessage::EnableContinuousUpdates, 10))
        );
        let b = hex("ff00 0001 0000ff0d 0000001c");
        assert_eq!(
            parse_client_message(&b),
            Ok((ClientMessage::QemuExtendedKeyEvent, 12))
        );
        let b = hex("ff01 0002 03 02 0000ac44");
        assert_eq!(parse_client_message(&b), Ok((ClientMessage::QemuAudio, 10)));
        // UltraVNC file transfer, xvp, SetDesktopSize.
        let b = hex("07 01 00 00 00000000 00000003 616263");
        assert_eq!(
            parse_client_message(&b),
            Ok((ClientMessage::FileTransfer { body_len: 3 }, 12))
        );
        assert_eq!(
            parse_client_message(&hex("fa000102")),
            Ok((ClientMessage::Xvp, 4))
        );
        let b = hex("fb00 0400 0300 01 00 00000001 0000 0000 0400 0300 00000000");
        assert_eq!(
            parse_client_message(&b),
            Ok((ClientMessage::SetDesktopSize, 24))
        );
        assert!(matches!(
            parse_client_message(&hex("63")),
            Err(ParseError::Invalid(_))
        ));
    }

    #[test]
    fn server_messages_from_real_bytes() {
        let b = hex("0000ffff");
        assert_eq!(
            parse_server_message(&b),
            Ok((ServerMessage::FramebufferUpdate { rects: 0xffff }, 4))
        );
        assert_eq!(
            parse_server_message(&hex("02")),
            Ok((ServerMessage::Bell, 1))
        );
        assert_eq!(
            parse_server_message(&hex("96")),
            Ok((ServerMessage::EndOfContinuousUpdates, 1))
        );
        assert_eq!(
            parse_server_message(&hex("01 00 0000 0002")),
            Ok((ServerMessage::SetColourMapEntries { body_len: 12 }, 6))
        );
        assert_eq!(
            parse_server_message(&hex("03000000 ffffffe8")),
            Ok((
                ServerMessage::CutText {
                    body_len: 24,
                    extended: true
                },
                8
            ))
        );
        assert_eq!(
            parse_server_message(&hex("f8000000 00000003 04 01020304")),
            Ok((ServerMessage::Fence, 13))
        );
        assert_eq!(
            parse_server_message(&hex("fa000101")),
            Ok((ServerMessage::Xvp, 4))
        );
    }

    #[test]
    fn rectangles_from_real_bytes() {
        // mac-to-linux: zlib strip 1024x32, 147 bytes of data.
        let b = hex("0000 0020 0400 0020 00000006 00000093");
        let (r, n) = parse_rect_header(&b).unwrap();
        assert_eq!(n, 12);
        assert_eq!(r.encoding, encoding::ZLIB);
        assert_eq!(rect_body(&r, Some(4)), RectBody::LengthPrefixed);
        assert_eq!(parse_length_prefix(&b[12..]), Ok((147, 4)));
        // Cursor 16x16 at 32bpp: pixels + mask.
        let (r, _) = parse_rect_header(&hex("0007 0007 0010 0010 ffffff11")).unwrap();
        assert_eq!(
            rect_body(&r, Some(4)),
            RectBody::Fixed(16 * 16 * 4 + 2 * 16)
        );
        // Raw 1024x16 at 32bpp, LastRect, DesktopSize.
        let (r, _) = parse_rect_header(&hex("0000 0000 0400 0010 00000000")).unwrap();
        assert_eq!(rect_body(&r, Some(4)), RectBody::Fixed(1024 * 16 * 4));
        assert_eq!(rect_body(&r, None), RectBody::Unknown);
        let (r, _) = parse_rect_header(&hex("0000 0000 0000 0000 ffffff20")).unwrap();
        assert_eq!(rect_body(&r, Some(4)), RectBody::LastRect);
        let (r, _) = parse_rect_header(&hex("0000 0000 0400 0300 fffffecc")).unwrap();
        assert_eq!(rect_body(&r, Some(4)), RectBody::ExtendedDesktopSize);
        let b = hex("01000000 00000000 0000 0000 0400 0300 00000000");
        assert_eq!(parse_extended_desktop_size(&b), Ok((1, 20)));
        let (r, _) = parse_rect_header(&hex("0000 0000 0001 0001 000003e8")).unwrap();
        assert_eq!(rect_body(&r, Some(4)), RectBody::Unknown);
    }

    #[test]
    fn tight_headers() {
        let rect = RectHeader {
            x: 0,
            y: 0,
            width: 64,
            height: 64,
            encoding: encoding::TIGHT,
        };
        // Fill with a 3-byte TPIXEL.
        assert_eq!(parse_tight_header(&hex("80 102030"), &rect, 3), Ok((0, 4)));
        // JPEG, compact length 2 bytes: 0x85 0x01 = 5 + 128.
        assert_eq!(parse_tight_header(&hex("90 8501"), &rect, 3), Ok((133, 3)));
        // Basic, stream 1, palette filter with 2 colours: 1-bit data 8*64 = 512 bytes,
        // compressed to compact length 0x7f.
        assert_eq!(
            parse_tight_header(&hex("50 01 01 000000 ffffff 7f"), &rect, 3),
            Ok((127, 10))
        );
        // Basic copy filter on a 2x1 rect: 6 bytes < 12, sent raw without a length.
        let small = RectHeader {
            width: 2,
            height: 1,
            ..rect
        };
        assert_eq!(parse_tight_header(&hex("00"), &small, 3), Ok((6, 1)));
        assert_eq!(
            parse_tight_header(&hex("50 01"), &rect, 3),
            Err(ParseError::Incomplete(3))
        );
        assert_eq!(
            parse_compact_length(&hex("ff ff 01")),
            Ok((0x7fff | 1 << 14, 3))
        );
    }

    #[test]
    fn hextile_and_trle_tiles() {
        // Raw tile 16x16 at 4 bytes per pixel.
        assert_eq!(
            parse_hextile_tile(&hex("01"), 16, 16, 4, false),
            Ok((1024, 1))
        );
        // Background + foreground + 2 subrects.
        let b = hex("0e 00000000 ffffffff 02 0011 2233");
        assert_eq!(parse_hextile_tile(&b, 16, 16, 4, false), Ok((0, 14)));
        // Coloured subrects.
        let b = hex("1a 00000000 01 ffffffff 00 11");
        assert_eq!(parse_hextile_tile(&b, 16, 16, 4, false), Ok((0, 12)));
        assert_eq!(
            parse_hextile_tile(&b[..6], 16, 16, 4, false),
            Err(ParseError::Incomplete(12))
        );
        // TRLE solid, packed palette, plain RLE.
        assert_eq!(parse_trle_tile(&hex("01 aabbcc"), 16, 16, 3, 0), Ok((0, 4)));
        let mut b = hex("02 000000 ffffff");
        b.extend(std::iter::repeat_n(0u8, 2 * 16));
        assert_eq!(parse_trle_tile(&b, 16, 16, 3, 0), Ok((2, b.len())));
        // Plain RLE: one run of 256 pixels = length byte 255.
        assert_eq!(
            parse_trle_tile(&hex("80 aabbcc ff 00"), 16, 16, 3, 0),
            Ok((0, 6))
        );
    }
}

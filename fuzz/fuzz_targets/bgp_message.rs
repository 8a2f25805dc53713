//! Fuzzes the appliance's BGP message parser (OPEN, UPDATE with RFC 7606 handling, KEEPALIVE,
//! NOTIFICATION, ROUTE-REFRESH), with and without 4-octet AS paths: no input may panic, a parsed
//! message never claims more bytes than it was given, every error carries a NOTIFICATION code of
//! RFC 4271 (1-3), and a parsed UPDATE re-encodes to something that parses again.
#![no_main]

use appliance::bgp::wire::{encode, parse, Ctx, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for four_octet in [false, true] {
        let ctx = Ctx { four_octet };
        match parse(data, ctx) {
            Ok(Some((msg, used))) => {
                assert!((19..=data.len()).contains(&used));
                if let Message::Update(u) = &msg {
                    if u.treat_as_withdraw.is_none() && u.attrs.as_path.len() < 256 {
                        let again = encode(&msg, ctx);
                        if again.len() <= 4096 {
                            assert!(parse(&again, ctx).is_ok(), "re-encoded UPDATE refused");
                        }
                    }
                }
            }
            Ok(None) => assert!(data.len() < 4096),
            Err(e) => assert!((1..=3).contains(&e.code), "{e:?}"),
        }
    }
});

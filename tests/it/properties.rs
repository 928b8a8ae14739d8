//! Property tests (run in `cargo test`): arbitrary input never panics the
//! config parser or the API answer decoding, and the units round-trip.

use autorender_sync::api::{decode_complete_answer, decode_start_answer};
use autorender_sync::config::Settings;
use autorender_sync::units::{parse_duration, parse_rate, parse_size};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn config_parser_never_panics_on_any_text(text in "\\PC{0,400}") {
        let _ = Settings::parse(&text, "fuzz.toml", None);
    }

    #[test]
    fn config_parser_never_panics_on_toml_shaped_text(
        section in prop::sample::select(vec!["[api]", "[agent]", "[[watch]]", "", "[x]"]),
        key in "[a-z_]{1,16}",
        value in prop_oneof![
            "\"[^\"\\\\]{0,40}\"",
            "-?[0-9]{1,20}",
            "(true|false)",
            "\\[\"[a-z*/.]{0,10}\"\\]",
            "\\{ [a-z]{1,5} = [0-9]{1,3} \\}",
        ],
    ) {
        let text = format!("{section}\n{key} = {value}\n");
        if let Err(errors) = Settings::parse(&text, "fuzz.toml", None) {
            for e in errors.0 {
                // Every problem is located.
                prop_assert!(e.line.is_some() || e.message.contains("TOML"), "{e}");
            }
        }
    }

    #[test]
    fn api_answers_never_panic(status in 0u16..1000, body in prop::collection::vec(any::<u8>(), 0..600), size in any::<u64>()) {
        let _ = decode_start_answer(status, &body, size);
        let _ = decode_complete_answer(status, &body);
    }

    #[test]
    fn start_answers_with_hostile_numbers_are_errors_not_panics(
        part_size in any::<i64>(),
        n in 0usize..40,
        size in any::<u64>(),
        expire in any::<i64>(),
    ) {
        let parts: Vec<String> = (0..n).map(|i| format!("https://s3.example/{i}")).collect();
        let body = serde_json::json!({"session_id": "s", "part_size": part_size, "parts": parts, "expire_at": expire});
        if let Ok(s) = decode_start_answer(200, body.to_string().as_bytes(), size) {
            // Whatever was accepted covers the file exactly: the parts'
            // ranges follow one another from 0 to `size`, none empty but a
            // lone part of an empty file, none longer than part_size.
            prop_assert!(s.part_size > 0);
            prop_assert!(s.parts.len() as u64 == size.div_ceil(s.part_size) || (size == 0 && s.parts.len() == 1));
            let mut next = 0u64;
            for i in 0..s.parts.len() {
                let (start, len) = s.part_range(i, size);
                prop_assert_eq!(start, next, "part {} starts where {} ended", i, i.saturating_sub(1));
                prop_assert!(len <= s.part_size);
                prop_assert!(len > 0 || size == 0);
                next = start + len;
            }
            prop_assert_eq!(next, size, "the parts cover the whole file");
        }
    }

    #[test]
    fn durations_sizes_and_rates_never_panic(text in "\\PC{0,30}") {
        let _ = parse_duration(&text);
        let _ = parse_size(&text);
        let _ = parse_rate(&text);
    }

    #[test]
    fn whole_seconds_round_trip(n in 0u64..100_000) {
        prop_assert_eq!(parse_duration(&format!("{n}s")).unwrap().as_secs(), n);
        prop_assert_eq!(parse_size(&format!("{n}KiB")).unwrap(), n * 1024);
    }
}

//! Property tests (run in `cargo test`): arbitrary input never panics the
//! config parser or the API answer decoding, and the units round-trip.

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

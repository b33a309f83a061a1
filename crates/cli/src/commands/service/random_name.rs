//! The name a service created without `--name` gets.

pub(super) const ADJECTIVES: &[&str] = &[
    "admiring", "brave", "calm", "clever", "dazzling", "eager", "elegant", "focused", "gallant", "happy", "jolly",
    "keen", "loving", "modest", "nifty", "optimistic", "peaceful", "quirky", "relaxed", "serene", "sharp", "tender",
    "upbeat", "vibrant", "wizardly", "youthful", "zealous",
];
pub(super) const NOUNS: &[&str] = &[
    "albatross", "anchovy", "barracuda", "carp", "cod", "dolphin", "eel", "flounder", "grouper", "haddock", "herring",
    "koi", "mackerel", "marlin", "minnow", "perch", "pike", "salmon", "sardine", "shark", "snapper", "sturgeon",
    "trout", "tuna", "wahoo",
];

/// A docker-ish `adjective_noun` name for a service created without one.
pub fn random_name() -> String {
    use rand::seq::SliceRandom;
    let mut rng = rand::thread_rng();
    format!("{}_{}", ADJECTIVES.choose(&mut rng).unwrap_or(&"calm"), NOUNS.choose(&mut rng).unwrap_or(&"carp"))
}

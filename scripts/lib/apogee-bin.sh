# Sourced by the benchmark scripts (from the repository root): sets APOGEE to the `apogee`
# binary to run, the caller's APOGEE if set (e.g. an older commit's build), else a release
# build of this tree.
if [ -z "${APOGEE:-}" ]; then
  cargo build -q --release -p apogee-cli
  APOGEE="$PWD/target/release/apogee"
fi

//! Every `.wgsl` file in the top-level `shaders/` folder parses and validates with naga (no GPU needed)
//! and is registered in `chorus_gpu::ShaderId`.

use chorus_gpu::ShaderId;

#[test]
fn every_shader_validates_and_is_registered() {
    let dir = crate::common::repo().join("shaders");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no shaders found in {}", dir.display());
    for name in &files {
        let src = std::fs::read_to_string(dir.join(name)).expect("read shader");
        let module =
            naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let all = ShaderId::all();
        let id = all
            .iter()
            .find(|id| id.file_name() == name)
            .unwrap_or_else(|| panic!("{name} is not registered in ShaderId"));
        assert_eq!(id.source(), src, "{name}: registry source differs from the file");
    }
    for id in ShaderId::all() {
        assert!(files.iter().any(|f| f == id.file_name()), "{id:?} names {} which is not in shaders/", id.file_name());
        let src = id.source();
        assert!(src.contains(&format!("fn {}(", id.entry_point())), "{id:?}: no entry point {}", id.entry_point());
    }
}

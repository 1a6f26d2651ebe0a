//! Maps folded into the checkpoint give what the student computed with them, in every family.

use super::tests::{family, fixture, noise};
use super::*;
use crate::heal::postnorm::norm_name;
use crate::model::open_checkpoint;
use candle_core::Device;
use std::collections::BTreeMap;

/// Maps away from the identity, folded by [`Student::fold`] into the weights, give the logits the
/// student computes with them; in a post-norm family the trained scale lands in the norm's
/// weight as `s − 1` (Gemma) or `s` (OLMo 2).
#[test]
fn folded_maps_give_the_student_logits_and_the_scale_its_convention() {
    for (arch, plus_one) in [
        ("llama", false),
        ("gemma2", true),
        ("gemma3", true),
        ("olmo2", false),
        ("granite", false),
    ] {
        let dir = if arch == "llama" {
            fixture()
        } else {
            family(arch)
        };
        let (cfg, source) = open_checkpoint(&dir).unwrap();
        let dense = Model::from_source(cfg.clone(), source.clone(), &|_| true).unwrap();
        let h = cfg.arch.hidden_size;
        let removed = [2usize];
        let student = Student::new(
            healed_model(cfg, source.clone(), &BTreeMap::new(), &removed).unwrap(),
            &removed,
            &[1, 3],
        )
        .unwrap();
        let post = student.post_norm().is_some();
        assert_eq!(post, arch != "llama" && arch != "granite", "{arch}");
        let maps: Maps<Tensor> = [1usize, 3]
            .iter()
            .map(|&l| {
                let eye = Tensor::eye(h, candle_core::DType::F32, &Device::Cpu).unwrap();
                let u = (eye + noise(l as u64, h, h, 0.3)).unwrap();
                let gain = post
                    .then(|| (noise(70 + l as u64, 1, h, 0.4).reshape(h).unwrap() + 1.0).unwrap());
                (l, SiteMap { u, gain })
            })
            .collect();
        let tokens: Vec<u32> = (0..20).map(|i| (i * 41 + 3) % 300).collect();
        let ctx = dense.attn_ctx(0, tokens.len()).unwrap();
        let mut entering = None;
        dense
            .forward_hidden(&dense.tokens(&[&tokens]).unwrap(), &[], None, &mut |tap| {
                if tap.layer == 1 {
                    entering = Some(tap.input.clone());
                }
                Ok(())
            })
            .unwrap();
        let hidden = student
            .hidden(&entering.unwrap(), &ctx, &maps, &Layers::new())
            .unwrap();
        let want: Vec<f32> = student
            .model
            .logits(&hidden)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut tensors = BTreeMap::new();
        student.fold(&maps, &mut tensors, source.as_ref()).unwrap();
        let mut names: Vec<String> = tensors.keys().cloned().collect();
        let mut expect = vec![
            "model.layers.1.mlp.down_proj.weight".to_string(),
            "model.layers.3.mlp.down_proj.weight".to_string(),
        ];
        if post {
            expect.push(norm_name(1));
            expect.push(norm_name(3));
        }
        names.sort();
        expect.sort();
        assert_eq!(names, expect, "{arch}");
        let folded = crate::heal::open_healed(&dir, &tensors).unwrap();
        let got: Vec<f32> = folded
            .logits(
                &folded
                    .forward_hidden(
                        &folded.tokens(&[&tokens]).unwrap(),
                        &removed,
                        None,
                        &mut |_| Ok(()),
                    )
                    .unwrap(),
            )
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let e = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            e < 1e-4,
            "{arch}: folded logits differ from the student's by {e}"
        );
        if post {
            for l in [1usize, 3] {
                let stored: Vec<f32> = source.tensor(&norm_name(l)).unwrap().to_vec1().unwrap();
                let v: Vec<f32> = maps[&l].gain.as_ref().unwrap().to_vec1().unwrap();
                let shift = if plus_one { 1.0 } else { 0.0 };
                for j in 0..h {
                    let s = (stored[j] + shift) * v[j];
                    let written = tensors[&norm_name(l)][j];
                    assert!(
                        (written - (s - shift)).abs() < 1e-5,
                        "{arch}: layer {l} channel {j}: wrote {written}, scale {s}"
                    );
                }
            }
        }
    }
}

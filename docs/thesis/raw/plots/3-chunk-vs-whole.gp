$d0 << EOD
-0.18 8.516290994393932
0.8200000000000001 8.59713637875594
1.82 13.282367578258711
2.82 1.4018715339381207
3.82 0.756265683435668
EOD
$d1 << EOD
0.18 8.277454359337899
1.18 8.741794528919565
2.18 15.112250612961773
3.18 1.399270301233863
4.18 0.7594648541699615
5.18 2.004251094204886
EOD
$d2 << EOD
5.36 2.350092162412612
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/3-chunk-vs-whole.png'
set title "#3 per-chunk vs whole-region hashing (thesis: not measured)"
set xlabel ""
set ylabel "GB/s (log)"
set grid
set key below left Left reverse maxcols 2 height 1
set logscale y
set style fill solid 0.6
set boxwidth 0.35
set xtics ("XXH3-64" 0, "XXH3-128" 1, "CRC32C" 2, "SHA-256" 3, "BLAKE2b-256" 4, "BLAKE3 (b3sum)" 5) rotate by -20
set xrange [-0.6:5.6]
plot $d0 using 1:2 with boxes  title "per 64 KiB chunk", \
  $d1 using 1:2 with boxes  title "whole region, one digest (b3sum: 1 thread)", \
  $d2 using 1:2 with points pt 7 ps 1.5 title "b3sum, all cores"

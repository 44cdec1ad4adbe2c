$d0 << EOD
-0.18 7.831036854473983
0.8200000000000001 8.755213866385242
1.82 12.59712529710671
2.82 1.3803845846378135
3.82 0.7657736070953491
EOD
$d1 << EOD
0.18 12.294568972293398
1.18 9.013585453312317
2.18 14.111863975057641
3.18 1.3406566227970564
4.18 0.7385195013089447
5.18 2.3086219311958702
EOD
$d2 << EOD
5.36 2.3570396317592994
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

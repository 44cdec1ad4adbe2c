$d0 << EOD
-0.18 8.285519974750157
0.8200000000000001 7.461394662002772
1.82 4.360794061471361
2.82 1.232001253442514
3.82 0.7367495999600696
4.82 1026.758976069425
EOD
$d1 << EOD
0.18 7.831036854473983
1.18 8.755213866385242
2.18 12.59712529710671
3.18 1.3803845846378135
4.18 0.7657736070953491
5.18 1464.2012498067036
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/2-hashing.png'
set title "#2 one dirty-detection pass (thesis: not measured; its prototype used CRC32 per block)"
set xlabel ""
set ylabel "GB/s of region covered per second (log)"
set grid
set key below left Left reverse maxcols 2 height 1
set logscale y
set style fill solid 0.6
set boxwidth 0.35
set xtics ("XXH3-64" 0, "XXH3-128" 1, "CRC32C" 2, "SHA-256" 3, "BLAKE2b-256" 4, "exact (uffd-wp)" 5) rotate by -20
set xrange [-0.6:5.6]
plot $d0 using 1:2 with boxes  title "4 KiB chunks", \
  $d1 using 1:2 with boxes  title "64 KiB chunks"
